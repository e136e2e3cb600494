"""JSON match: the fraction of the gold object's fields that the predicted JSON object gets right."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import example_error, read_options
from taskfit.parsing import answer_key, as_text, iter_json, lookup


def first_object(text: str) -> dict[str, Any] | None:
    """The first JSON object embedded in ``text``, or None."""
    return next((obj for obj in iter_json(text) if isinstance(obj, dict)), None)


def same_value(pred: Any, gold: Any) -> bool:
    """Equal values; a string on either side compares as normalized text ("Paris." == "paris", "5" == 5)."""
    if isinstance(pred, str) or isinstance(gold, str):
        return answer_key(as_text(pred)) == answer_key(as_text(gold))
    if isinstance(pred, bool) != isinstance(gold, bool):  # True == 1 in Python, but not in JSON
        return False
    return pred == gold


def field_matches(pred: dict[str, Any], gold: dict[str, Any], path: str) -> bool:
    """One field agrees, where absent from both also counts as agreeing."""
    (p_found, p), (g_found, g) = lookup(pred, path), lookup(gold, path)
    return p_found == g_found and (not g_found or same_value(p, g))


@dataclass(frozen=True)
class JsonMatch:
    fields: tuple[str, ...] | None = None

    @property
    def binary(self) -> bool:
        return self.fields is not None and len(self.fields) == 1

    def __call__(self, prediction: str | None, example: Example) -> float:
        gold = first_object(example.target)
        if gold is None:
            raise example_error("json_match", f"the target {example.target!r} is not a JSON object", example)
        pred = first_object(prediction) if prediction is not None else None
        if pred is None:
            return 0.0
        paths = self.fields if self.fields is not None else tuple(gold)
        if not paths:
            return float(pred == gold)
        return sum(field_matches(pred, gold, p) for p in paths) / len(paths)


def create(**options: Any) -> JsonMatch:
    """Options: fields (list of dotted keys; default every key of the gold object)."""
    o = read_options("json_match", options, fields=None)
    fields = o["fields"]
    if fields is not None and (not isinstance(fields, list) or not fields
                               or not all(isinstance(f, str) for f in fields)):
        raise TaskfitError(f"metric 'json_match': option 'fields' must be a non-empty list of keys, got {fields!r}",
                           field="metrics.json_match.fields")
    return JsonMatch(fields=None if fields is None else tuple(fields))
