"""Fuzzy: rapidfuzz edit-distance similarity to the closest gold answer, optionally thresholded to 0/1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import gold_answers, read_options
from taskfit.parsing import answer_key


@dataclass(frozen=True)
class Fuzzy:
    threshold: float | None = None
    normalize: bool = True

    @property
    def binary(self) -> bool:
        return self.threshold is not None

    def _key(self, text: str) -> str:
        return answer_key(text) if self.normalize else text.strip()

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        pred = self._key(prediction)
        score = max(fuzz.ratio(pred, self._key(g)) / 100 for g in gold_answers(example))
        return score if self.threshold is None else float(score >= self.threshold)


def create(**options: Any) -> Fuzzy:
    """Options: threshold (fraction in [0, 1]; scores become 0/1), normalize (bool, default true)."""
    o = read_options("fuzzy", options, threshold=None, normalize=True)
    t = o["threshold"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1):
        raise TaskfitError(f"metric 'fuzzy': option 'threshold' must be a fraction in [0, 1], got {t!r}",
                           field="metrics.fuzzy.threshold")
    return Fuzzy(threshold=None if t is None else float(t), normalize=o["normalize"])
