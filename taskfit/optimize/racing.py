"""Racing: successive halving on growing dev minibatches, with paired tests that drop candidates early.

Every candidate still in the race is scored on the same first n dev rows, so candidates are compared pairwise
(McNemar for 0/1 metrics, paired bootstrap otherwise, from ``taskfit.stats``). After each rung a candidate
whose score is significantly below the leader's leaves the race, then the bottom of the field is cut so that at
most 1/eta of it goes on to a rung eta times larger. The race ends when one candidate is left or is
significantly better than every other, when the dev split is used up, or when the budget cannot pay for the
next rung.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskfit.dataset import Example
from taskfit.optimize.budget import BudgetSpent, CallMeter
from taskfit.stats import paired_p, score_interval

Evaluate = Callable[[str, list[Example]], list[float]]  # (candidate key, rows) -> one score per row
Cost = Callable[[str, list[Example]], int]  # (candidate key, rows) -> calls that evaluating them would spend
Progress = Callable[[dict[str, Any]], None]


@dataclass
class Entrant:
    key: str
    scores: list[float] = field(default_factory=list)  # on dev[:len(scores)], in dev order
    calls: int = 0
    alive: bool = True
    dropped: str = ""  # why it left the race

    def mean(self, n: int | None = None) -> float:
        xs = self.scores[:n] if n is not None else self.scores
        return sum(xs) / len(xs) if xs else 0.0


def rung_sizes(first: int, n_dev: int, eta: float) -> list[int]:
    """first, first*eta, ... up to every dev row."""
    sizes = [min(first, n_dev)]
    while sizes[-1] < n_dev:
        sizes.append(min(n_dev, max(sizes[-1] + 1, math.ceil(sizes[-1] * eta))))
    return sizes


def planned_calls(n_candidates: int, first: int, n_dev: int, eta: float, per_candidate: int = 1) -> int:
    """Calls a race would spend if it halved the field at every rung: rows evaluated plus a fixed cost per
    candidate (a calibration prompt)."""
    total, alive, done = n_candidates * per_candidate, n_candidates, 0
    for size in rung_sizes(first, n_dev, eta):
        if alive == 1 and done:  # the race ends when one candidate is left
            break
        total += alive * (size - done)
        done = size
        alive = math.ceil(alive / eta)
    return total


def first_rung(n_candidates: int, n_dev: int, budget: float, eta: float, smallest: int = 8,
               per_candidate: int = 1) -> int:
    """The largest first minibatch whose planned race fits ``budget`` (at least ``smallest`` rows)."""
    best = min(smallest, n_dev)
    for first in range(best, n_dev + 1):
        if planned_calls(n_candidates, first, n_dev, eta, per_candidate) > budget:
            break
        best = first
    return best


class Race:
    def __init__(self, dev: list[Example], evaluate: Evaluate, cost: Cost, meter: CallMeter, *, binary: bool,
                 alpha: float = 0.05, eta: float = 2.0, progress: Progress | None = None):
        self.dev, self.evaluate, self.cost, self.meter = dev, evaluate, cost, meter
        self.binary, self.alpha, self.eta = binary, alpha, eta
        self.progress = progress or (lambda event: None)
        self.entrants: dict[str, Entrant] = {}
        self.budget_short = False  # the last rung could not be paid for in full

    def add(self, key: str) -> None:
        self.entrants[key] = Entrant(key)

    @property
    def alive(self) -> list[Entrant]:
        return [e for e in self.entrants.values() if e.alive]

    def common(self) -> int:
        """Rows every candidate still in the race has been scored on."""
        return min((len(e.scores) for e in self.alive), default=0)

    def _rung_cost(self, size: int) -> int:
        return sum(self.cost(e.key, self.dev[len(e.scores):size]) for e in self.alive if len(e.scores) < size)

    def evaluate_to(self, size: int) -> int:
        """Score every candidate in the race on the first ``size`` dev rows, or as many as the budget pays for
        (the same rows for all). Returns the rows reached; no more than before when nothing could be paid for."""
        size = min(size, len(self.dev))
        start = self.common()
        if self._rung_cost(size) > self.meter.remaining:
            self.budget_short = True
            lo, hi = start, size  # the largest affordable size, by bisection (costs are monotone in size)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._rung_cost(mid) <= self.meter.remaining:
                    lo = mid
                else:
                    hi = mid - 1
            size = lo
        for e in self.alive:
            if len(e.scores) >= size:
                continue
            rows = self.dev[len(e.scores):size]
            before = self.meter.used
            try:
                e.scores += self.evaluate(e.key, rows)
            except BudgetSpent:
                self.budget_short = True
                return self.common()
            e.calls += self.meter.used - before
            self.progress({"event": "evaluated", "key": e.key, "rows": len(e.scores), **self.best()})
        return self.common()

    def leader(self) -> Entrant:
        """The best candidate still in the race on the rows all of them share (the earliest one on a tie)."""
        n = self.common()
        alive = self.alive
        return max(alive, key=lambda e: (e.mean(n), -list(self.entrants).index(e.key)))

    def standing(self, e: Entrant, n: int | None = None) -> dict[str, Any]:
        xs = e.scores[:n] if n is not None else e.scores
        lo, hi = score_interval(xs, self.binary) if xs else (0.0, 0.0)
        return {"key": e.key, "n": len(xs), "mean": e.mean(n), "ci_low": lo, "ci_high": hi}

    def best(self) -> dict[str, Any]:
        """The current leader with its score and 95% CI, for progress reports."""
        return {"best": self.standing(self.leader())} if self.alive else {}

    def p_vs_leader(self, e: Entrant, n: int) -> float:
        return paired_p(self.leader().scores[:n], e.scores[:n], self.binary)

    def cull(self) -> None:
        """Drop candidates significantly behind the leader, then keep at most 1/eta of the field."""
        n = self.common()
        if n == 0 or len(self.alive) < 2:
            return
        lead = self.leader()
        for e in self.alive:
            if e is lead or e.mean(n) >= lead.mean(n):
                continue
            p = self.p_vs_leader(e, n)
            if p < self.alpha:
                self._drop(e, f"behind {lead.key} (p={p:.3f}, {n} rows)")
        order = list(self.entrants)
        ranked = sorted(self.alive, key=lambda e: (-e.mean(n), order.index(e.key)))
        keep = max(1, math.ceil(len(ranked) / self.eta))
        for e in ranked[keep:]:
            self._drop(e, f"bottom of the field ({n} rows)")

    def _drop(self, e: Entrant, why: str) -> None:
        e.alive, e.dropped = False, why
        self.progress({"event": "dropped", "key": e.key, "why": why, **self.best()})

    def clearly_best(self) -> bool:
        """One candidate left, or the leader significantly better than every other candidate in the race."""
        alive = self.alive
        if len(alive) <= 1:
            return True
        n, lead = self.common(), self.leader()
        return n > 0 and all(self.p_vs_leader(e, n) < self.alpha for e in alive if e is not lead)

    def run(self, sizes: list[int]) -> str:
        """Race through the rung ``sizes``; returns why it stopped."""
        for size in sizes:
            reached_before = self.common()
            reached = self.evaluate_to(size)
            if reached <= reached_before and reached < size:
                return "budget spent"
            if self.clearly_best():
                return "one candidate clearly best"
            if reached >= len(self.dev):
                return "dev split used up"
            if self.budget_short:
                return "budget spent"
            self.cull()
            self.progress({"event": "rung", "rows": reached, "alive": len(self.alive), **self.best()})
            if len(self.alive) == 1:
                return "one candidate left"
        return "dev split used up"
