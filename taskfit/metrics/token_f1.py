"""Token F1 (SQuAD): overlap of normalized tokens between prediction and gold, best over gold answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.metrics import gold_answers, read_options
from taskfit.parsing import answer_key


def f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall; two empty answers agree."""
    pred_tokens, gold_tokens = answer_key(prediction).split(), answer_key(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class TokenF1:
    binary: bool = False

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        return max(f1(prediction, g) for g in gold_answers(example))


def create(**options: Any) -> TokenF1:
    """No options."""
    read_options("token_f1", options)
    return TokenF1()
