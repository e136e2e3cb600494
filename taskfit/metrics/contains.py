"""Contains: a normalized gold answer occurs in the normalized prediction as whole words."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.metrics import gold_answers, read_options
from taskfit.parsing import answer_key


def occurs(phrase: str, text: str) -> bool:
    """True when ``phrase`` is a whole word sequence of space-separated ``text``."""
    return bool(phrase) and re.search(rf"(?<!\S){re.escape(phrase)}(?!\S)", text) is not None


@dataclass(frozen=True)
class Contains:
    binary: bool = True

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        text = answer_key(prediction)
        return float(any(occurs(answer_key(g), text) for g in gold_answers(example)))


def create(**options: Any) -> Contains:
    """No options."""
    read_options("contains", options)
    return Contains()
