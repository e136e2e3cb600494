"""Custom: a user function ``func(prediction, example) -> number | bool`` imported from a dotted path."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import REQUIRED, example_error, read_options


def import_function(path: str) -> Callable[..., Any]:
    """Import "package.module:func" or "package.module.func"; errors name the path."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise TaskfitError(f"metric 'custom': function {path!r} must look like 'package.module:func'",
                           field="metrics.custom.function")
    try:
        func = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise TaskfitError(f"metric 'custom': cannot import {path!r}: {e}", field="metrics.custom.function") from None
    except AttributeError:
        raise TaskfitError(f"metric 'custom': module {module!r} has no {attr!r} (from {path!r})",
                           field="metrics.custom.function") from None
    if not callable(func):
        raise TaskfitError(f"metric 'custom': {path!r} is not callable", field="metrics.custom.function")
    return func


@dataclass(frozen=True)
class Custom:
    func: Callable[..., Any]
    path: str
    binary: bool = False

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        return self._check(self.func(prediction, example), example)

    def _check(self, value: Any, example: Example) -> float:
        """Turn the function's result into a score, refusing anything outside [0, 1]."""
        if not isinstance(value, (bool, int, float)) or isinstance(value, float) and math.isnan(value):
            raise example_error("custom", f"{self.path} returned {value!r}; it must return a number or a bool",
                                example)
        score = float(value)
        if not 0.0 <= score <= 1.0 or self.binary and score not in (0.0, 1.0):
            allowed = "0 or 1 (binary: true)" if self.binary else "in [0, 1]"
            raise example_error("custom", f"{self.path} returned {value!r}; scores must be {allowed}", example)
        return score


def create(**options: Any) -> Custom:
    """Options: function ("package.module:func", required), binary (bool, default false)."""
    o = read_options("custom", options, function=REQUIRED, binary=False)
    if not isinstance(o["function"], str):
        raise TaskfitError("metric 'custom': option 'function' must be a string", field="metrics.custom.function")
    return Custom(func=import_function(o["function"]), path=o["function"], binary=o["binary"])


def python_metric(func: Callable[[str, str], Any], name: str) -> Custom:
    """A Python function ``func(prediction, target) -> number | bool`` in [0, 1] as a metric (the Python API);
    ``func.binary = True`` marks a 0/1 metric."""
    return Custom(func=lambda prediction, example: func(prediction, example.target), path=name,
                  binary=bool(getattr(func, "binary", False)))
