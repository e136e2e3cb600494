"""Choosing few-shot demonstrations from the train split: fixed, random, knn, balanced.

A query never gets itself, or a row with its very input, as a demonstration: a teacher labelling train rows
draws its demos from those same rows, and a demo that shows the answer it is asked for overstates what it
does on new inputs. ``same`` gives a row's input (``StrategyContext.input_key``); without it only the row id
is compared. Where a selection would pick such a row it picks the next eligible one instead, so every query
still gets k demos when the pool has them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from itertools import islice

from taskfit.dataset import Example
from taskfit.errors import TaskfitError

Selector = Callable[[list[Example], list[Example], int, int], list[list[Example]]]
InputKey = Callable[[Example], Hashable]  # a row's input, as the model is shown it


def apart(demos: list[Example], query: Example, same: InputKey | None = None) -> list[Example]:
    """``demos`` less the query itself and rows whose input is the query's."""
    mine = same(query) if same is not None else None
    return [d for d in demos if d.id != query.id and (same is None or same(d) != mine)]


def fixed(pool: list[Example], queries: list[Example], k: int, seed: int, ids: list[str] | None = None,
          same: InputKey | None = None):
    """The same demos for every query: the listed ids, else the first k of the pool (for a query among them,
    the first k of the others)."""
    if ids:
        by_id = {e.id: e for e in pool}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise TaskfitError(f"few-shot example ids not in the train split: {missing}", field="strategies[].examples")
        listed = [by_id[i] for i in ids]
        return [_shared(listed, q, same, lambda q: apart(listed, q, same)) for q in queries]
    first = pool[:k]
    return [_shared(first, q, same, lambda q: apart(pool, q, same)[:k]) for q in queries]


def _shared(demos: list[Example], query: Example, same: InputKey | None,
            instead: Callable[[Example], list[Example]]) -> list[Example]:
    """The demos every query shares, or ``instead(query)`` for a query that would see itself among them."""
    return demos if len(apart(demos, query, same)) == len(demos) else instead(query)


def random_demos(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None,
                 same: InputKey | None = None):
    """k demos drawn per query, seeded by the query id (so a resumed run draws the same ones)."""
    out = []
    for q in queries:
        rng = random.Random(f"{seed}:{q.id}")
        candidates = apart(pool, q, same)
        out.append(rng.sample(candidates, min(k, len(candidates))))
    return out


def balanced(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None, labels: list[str] | None = None,
             same: InputKey | None = None):
    """The same demos for every query, an equal number per label, labels interleaved (for a query among them,
    drawn the same way from the others)."""
    demos = _balanced(pool, k, seed, labels)
    return [_shared(demos, q, same, lambda q: _balanced(apart(pool, q, same), k, seed, labels)) for q in queries]


def _balanced(pool: list[Example], k: int, seed: int, labels: list[str] | None) -> list[Example]:
    by_label: dict[str, list[Example]] = {}
    for e in pool:
        by_label.setdefault(e.target, []).append(e)
    order = labels or sorted(by_label)
    rng = random.Random(seed)
    per = max(1, k // max(1, len(order)))
    picked = {lab: rng.sample(by_label.get(lab, []), min(per, len(by_label.get(lab, [])))) for lab in order}
    return [picked[lab][i] for i in range(per) for lab in order if i < len(picked[lab])]


def knn(pool: list[Example], queries: list[Example], k: int, seed: int, ids=None, text: Callable[[Example], str] = str,
        model_path: str | None = None, same: InputKey | None = None):
    """The k pool examples nearest each query by MiniLM embedding; the nearest is placed last (next to the query)."""
    from taskfit.embeddings import embed

    pool_vecs = _pool_vectors(pool, text, model_path)
    query_vecs = embed([text(q) for q in queries], model_path)
    sims = query_vecs @ pool_vecs.T
    out = []
    for qi, q in enumerate(queries):
        order = sims[qi].argsort()[::-1]
        mine = same(q) if same is not None else None
        chosen = list(islice((pool[j] for j in order
                              if pool[j].id != q.id and (same is None or same(pool[j]) != mine)), k))
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
