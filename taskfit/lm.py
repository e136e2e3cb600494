"""The model as strategies see it: a backend behind the call cache, recording every call in a trace."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from taskfit.backends import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from taskfit.cache import CallCache, call_key


@dataclass
class Trace:
    """Every model call made for one example, in order, with what it cost."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_calls(self) -> int:
        """Model completions requested: a request for n samples counts n (it is billed and computed n times)."""
        return sum(int(c["params"].get("n", 1)) for c in self.calls)  # tool runs record n=0

    @property
    def cache_hits(self) -> int:
        return sum(1 for c in self.calls if c["cached"])

    def total(self, key: str) -> float:
        return sum(c.get(key) or 0 for c in self.calls)

    @property
    def error(self) -> str | None:
        # a failed tool run is an observation the model reacts to, not a failed prediction
        errors = [c["error"] for c in self.calls if c.get("error") and c.get("kind") != "tool"]
        return errors[-1] if errors else None


class LM:
    """Batched generate/score with caching. Failed calls are returned with ``error`` set and not cached."""

    def __init__(self, backend: Backend, cache: CallCache):
        self.backend = backend
        self.cache = cache
        self.model_id = backend.model_id
        use_cache = getattr(backend, "use_cache", None)
        if use_cache is not None:  # a server backend keeps its probed scoring path in the cache
            use_cache(cache)

    @property
    def can_score(self) -> bool:
        return self.backend.supports_score

    def generate(self, requests: list[GenerateRequest], traces: list[Trace], step: str = "generate") -> list[GenerateResult]:
        return self._call("generate", requests, traces, step, self.backend.generate, GenerateResult)

    def score(self, requests: list[ScoreRequest], traces: list[Trace], step: str = "score") -> list[ScoreResult]:
        return self._call("score", requests, traces, step, self.backend.score, ScoreResult)

    def _call(self, kind, requests, traces, step, fn, result_type):
        # score calls are keyed by how the backend scores (a server's scoring path changes the numbers)
        ident = getattr(self.backend, "score_id", self.model_id) if kind == "score" else self.model_id
        keys = [call_key(ident, kind, r) for r in requests]
        hits = self.cache.get_many(list(dict.fromkeys(keys)))
        # identical requests in one batch are sent once
        first: dict[str, Any] = {}
        for k, r in zip(keys, requests, strict=True):
            first.setdefault(k, r)
        todo = [k for k in first if k not in hits]
        fresh: dict[str, Any] = {}
        # similar prompt lengths together (less padding), and one cache commit per backend batch, so a killed
        # process loses at most the batch in flight and never repeats a call it had finished
        todo.sort(key=lambda k: sum(len(m.get("content") or "") for m in first[k].messages))
        size = max(1, getattr(self.backend, "batch_size", len(todo) or 1))
        for start in range(0, len(todo), size):
            part = todo[start:start + size]
            outs = fn([first[k] for k in part])
            rows = []
            for k, out in zip(part, outs, strict=True):
                fresh[k] = out
                if out.error is None:
                    rows.append((k, self.model_id, kind, first[k], asdict(out)))
            self.cache.put_many(rows)
        results = []
        sent: set[str] = set()
        # a request shared by several examples of the batch (a calibration prompt, a fixed preamble) is one
        # model call: each example is charged its share of the tokens and time, the same on cold and cached runs
        shares = Counter(keys)
        for k, req, trace in zip(keys, requests, traces, strict=True):
            # a repeat of a request in the same batch was answered without calling the model: a cache hit
            cached = k in hits or k in sent
            if k in fresh:
                sent.add(k)
            res = result_type(**hits[k]) if k in hits else fresh[k]
            results.append(res)
            trace.calls.append({
                "step": step, "kind": kind, "messages": list(req.messages),
                "params": {f: v for f, v in asdict(req).items() if f != "messages"},
                "output": res.texts if kind == "generate" else res.logprobs,
                "tokens_in": res.tokens_in / shares[k], "tokens_out": getattr(res, "tokens_out", 0) / shares[k],
                "latency_ms": res.latency_ms / shares[k], "shared_by": shares[k], "cached": cached, "error": res.error,
            })
        return results
