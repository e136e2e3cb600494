"""Numeric: the last number in the prediction equals the gold number (GSM8K-style answers)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import example_error, gold_answers, read_options

# A sign only when it does not follow a word or digit ("3-4" is two numbers), an optional "$",
# then digits with optional thousands commas and decimals.
_NUMBER = re.compile(r"(?<![\w.])([-\u2212]?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_FINAL_MARK = "####"  # GSM8K puts the final answer after "####"


def extract_number(text: str) -> float | None:
    """The answer number in ``text``: the first after the last "####", else the last one; None if none."""
    if _FINAL_MARK in text:
        m = _NUMBER.search(text.rsplit(_FINAL_MARK, 1)[1])
        if m:
            return _to_float(m)
    matches = list(_NUMBER.finditer(text))
    return _to_float(matches[-1]) if matches else None


def _to_float(m: re.Match[str]) -> float:
    value = float(m.group(2).replace(",", ""))
    return -value if m.group(1) else value


@dataclass(frozen=True)
class Numeric:
    tolerance: float = 1e-6
    binary: bool = True

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        golds = [g for g in (extract_number(a) for a in gold_answers(example)) if g is not None]
        if not golds:
            raise example_error("numeric", f"gold answer {example.target!r} has no number", example)
        pred = extract_number(prediction)
        if pred is None:
            return 0.0
        tol = self.tolerance
        return float(any(math.isclose(pred, g, rel_tol=tol, abs_tol=tol) for g in golds))


def create(**options: Any) -> Numeric:
    """Options: tolerance (relative and absolute, default 1e-6)."""
    o = read_options("numeric", options, tolerance=1e-6)
    if o["tolerance"] < 0:
        raise TaskfitError("metric 'numeric': option 'tolerance' must be >= 0", field="metrics.numeric.tolerance")
    return Numeric(tolerance=float(o["tolerance"]))
