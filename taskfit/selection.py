"""Choosing few-shot demonstrations from the train split: fixed, random, knn, balanced."""

from __future__ import annotations

import random
from collections.abc import Callable

from taskfit.dataset import Example
from taskfit.errors import TaskfitError

Selector = Callable[[list[Example], list[Example], int, int], list[list[Example]]]


def fixed(pool: list[Example], queries: list[Example], k: int, seed: int, ids: list[str] | None = None):
    """The same demos for every query: the listed ids, else the first k of the pool."""
    if ids:
        by_id = {e.id: e for e in pool}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise TaskfitError(f"few-shot example ids not in the train split: {missing}", field="strategies[].examples")
        demos = [by_id[i] for i in ids]
    else:
        demos = pool[:k]
    return [demos for _ in queries]


def random_demos(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None):
    """k demos drawn per query, seeded by the query id (so a resumed run draws the same ones)."""
    out = []
    for q in queries:
        rng = random.Random(f"{seed}:{q.id}")
        candidates = [e for e in pool if e.id != q.id]
        out.append(rng.sample(candidates, min(k, len(candidates))))
    return out


def balanced(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None, labels: list[str] | None = None):
    """The same demos for every query, an equal number per label, labels interleaved."""
    by_label: dict[str, list[Example]] = {}
    for e in pool:
        by_label.setdefault(e.target, []).append(e)
    order = labels or sorted(by_label)
    rng = random.Random(seed)
    per = max(1, k // max(1, len(order)))
    picked = {lab: rng.sample(by_label.get(lab, []), min(per, len(by_label.get(lab, [])))) for lab in order}
    demos = [picked[lab][i] for i in range(per) for lab in order if i < len(picked[lab])]
    return [demos for _ in queries]


def knn(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None, text: Callable[[Example], str] = str,
        model_path: str | None = None):
    """The k pool examples nearest each query by MiniLM embedding; the nearest is placed last (next to the query)."""
    from taskfit.embeddings import embed

    pool_vecs = _pool_vectors(pool, text, model_path)
    query_vecs = embed([text(q) for q in queries], model_path)
    sims = query_vecs @ pool_vecs.T
    out = []
    for qi, q in enumerate(queries):
        order = sims[qi].argsort()[::-1]
        chosen = [pool[j] for j in order if pool[j].id != q.id][:k]
        out.append(list(reversed(chosen)))
    return out


_pool_cache: dict[tuple, object] = {}


def _pool_vectors(pool: list[Example], text, model_path):
    key = (tuple(e.id for e in pool), model_path)
    if key not in _pool_cache:
        from taskfit.embeddings import embed

        _pool_cache.clear()
        _pool_cache[key] = embed([text(e) for e in pool], model_path)
    return _pool_cache[key]


SELECTORS = {"fixed": fixed, "random": random_demos, "knn": knn, "balanced": balanced}
