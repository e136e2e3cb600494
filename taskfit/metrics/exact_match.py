"""Exact match (also "accuracy"): the prediction equals one of the gold answers after normalization."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.metrics import gold_answers, read_options
from taskfit.parsing import answer_key

_SEGMENT_END = re.compile(r"[,;\n]")


@dataclass(frozen=True)
class ExactMatch:
    normalize: bool = True
    first_segment: bool = False
    binary: bool = True

    def _key(self, text: str) -> str:
        return answer_key(text) if self.normalize else text.strip()

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        candidates = {self._key(prediction)}
        if self.first_segment:
            # Keep the whole prediction too, so a gold answer with a comma ("Paris, Texas") still matches.
            candidates.add(self._key(_SEGMENT_END.split(prediction, maxsplit=1)[0]))
        return float(any(self._key(g) in candidates for g in gold_answers(example)))


def create(**options: Any) -> ExactMatch:
    """Options: normalize (bool, default true), first_segment (bool, default false)."""
    o = read_options("exact_match", options, normalize=True, first_segment=False)
    return ExactMatch(normalize=o["normalize"], first_segment=o["first_segment"])
