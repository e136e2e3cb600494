"""The call budget: every distinct model request a search makes is counted, whether the model or the cache answers.

Counting distinct requests (cache hits included) makes a search deterministic: the same command on a warm cache
makes the same decisions and spends the same budget, only faster, and a killed search resumes from the cache. How
many requests actually reached the model is counted separately (``sent``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskfit.backends import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from taskfit.cache import call_key
from taskfit.lm import LM, Trace


class BudgetSpent(Exception):
    """A request would take the search past its call budget; nothing was sent."""


class CountingBackend:
    """A backend that counts the completions it is asked for (the calls that reach the model)."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.sent = 0

    def __getattr__(self, name: str) -> Any:  # model_id, supports_score, batch_size, describe...
        return getattr(self.inner, name)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        self.sent += sum(r.n for r in requests)
        return self.inner.generate(requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self.sent += len(requests)
        return self.inner.score(requests)


class CallMeter:
    """The budget and what has been spent of it, shared by every model a search uses (task model, teacher)."""

    def __init__(self, budget: int | None):
        self.budget = budget  # None: unlimited (exhaustive evaluation)
        self.seen: set[str] = set()
        self.used = 0
        self.backends: list[CountingBackend] = []

    @property
    def remaining(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.used

    @property
    def sent(self) -> int:
        """Calls that reached a model (the rest of ``used`` came from the call cache)."""
        return sum(b.sent for b in self.backends)

    def lm(self, lm: LM) -> MeteredLM:
        """``lm`` with its calls counted against this budget."""
        counting = CountingBackend(lm.backend)
        self.backends.append(counting)
        return MeteredLM(LM(counting, lm.cache), self)

    def cost(self, run: Callable[[DryRunLM], object], lm: MeteredLM) -> int:
        """Calls that ``run`` would add to the spend, found by running it against a model that answers nothing."""
        dry = DryRunLM(lm.model_id, lm.can_score, lm.backend)
        run(dry)
        return sum(n for key, n in dry.requests.items() if key not in self.seen)


def _new_cost(model_id: str, kind: str, requests: list, seen: set[str]) -> dict[str, int]:
    """Distinct requests not yet made, with the completions each asks for (n samples cost n)."""
    out: dict[str, int] = {}
    for r in requests:
        key = call_key(model_id, kind, r)
        if key not in seen:
            out[key] = getattr(r, "n", 1)
    return out


class MeteredLM:
    """An LM whose calls are counted by a CallMeter; a batch that does not fit the budget raises BudgetSpent."""

    def __init__(self, lm: LM, meter: CallMeter):
        self.lm, self.meter = lm, meter
        self.backend = lm.backend
        self.cache = lm.cache
        self.model_id = lm.model_id

    @property
    def can_score(self) -> bool:
        return self.lm.can_score

    def _charge(self, kind: str, requests: list) -> None:
        new = _new_cost(self.model_id, kind, requests, self.meter.seen)
        if sum(new.values()) > self.meter.remaining:
            raise BudgetSpent(f"{sum(new.values())} more calls would exceed the budget of {self.meter.budget}")
        self.meter.seen.update(new)
        self.meter.used += sum(new.values())

    def generate(self, requests: list[GenerateRequest], traces: list[Trace], step: str = "generate") -> list[GenerateResult]:
        self._charge("generate", requests)
        return self.lm.generate(requests, traces, step)

    def score(self, requests: list[ScoreRequest], traces: list[Trace], step: str = "score") -> list[ScoreResult]:
        self._charge("score", requests)
        return self.lm.score(requests, traces, step)


class DryRunLM:
    """Records the requests a strategy would make and answers each with nothing, without calling a model.

    Used to price an evaluation before running it and to show a prompt as text; single-call strategies make the
    same requests whatever the answers are.
    """

    def __init__(self, model_id: str, can_score: bool = True, backend: Any = None):
        self.model_id = model_id
        self.can_score = can_score
        self.backend = backend  # strategies may ask what the backend is (e.g. whether it needs calibration)
        self.requests: dict[str, int] = {}
        self.log: list[tuple[str, Any]] = []

    def generate(self, requests: list[GenerateRequest], traces: list[Trace], step: str = "generate") -> list[GenerateResult]:
        for r in requests:
            self.requests[call_key(self.model_id, "generate", r)] = r.n
            self.log.append((step, r))
        return [GenerateResult(texts=[""] * r.n) for r in requests]

    def score(self, requests: list[ScoreRequest], traces: list[Trace], step: str = "score") -> list[ScoreResult]:
        for r in requests:
            self.requests[call_key(self.model_id, "score", r)] = 1
            self.log.append((step, r))
        return [ScoreResult(logprobs=[0.0] * len(r.continuations)) for r in requests]
