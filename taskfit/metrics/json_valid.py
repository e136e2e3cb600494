"""JSON valid: the prediction contains a JSON object or array."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.metrics import read_options
from taskfit.parsing import parse_json


@dataclass(frozen=True)
class JsonValid:
    binary: bool = True

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        return float(not parse_json(prediction, None).failed)


def create(**options: Any) -> JsonValid:
    """No options."""
    read_options("json_valid", options)
    return JsonValid()
