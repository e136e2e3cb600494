"""Metrics: score parsed predictions against examples' gold answers, in [0, 1], a batch at a time.

Adding a metric: write ``taskfit/metrics/<name>.py`` with a ``create(**options) -> Metric`` function
and add one line to ``BUILTINS``. A metric that scores one example at a time needs only ``__call__``; one
that calls a model (an LLM judge) implements ``score_batch``, so its calls go out in batches, and reports
what it spent on each example. A metric that reads or writes stored state (review labels, a judge's call
cache) also takes a keyword-only ``workspace``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.registry import Registry, create_with

REQUIRED: Any = object()  # default marking an option the user must give


@dataclass(frozen=True)
class Scored:
    """One example's score, why (when the metric says), and what scoring it spent on model calls."""

    value: float
    reason: str | None = None
    calls: int = 0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    cost: float = 0.0  # in $, from the scoring model's prices


class Metric(Protocol):
    """A scorer of one example. ``binary`` metrics only return 0 or 1 (Wilson intervals and McNemar apply)."""

    @property
    def binary(self) -> bool: ...

    def __call__(self, prediction: str | None, example: Example) -> float: ...


@runtime_checkable
class BatchMetric(Protocol):
    """A scorer of a batch: one ``Scored`` per example, in order (an LLM judge, which batches its calls)."""

    @property
    def binary(self) -> bool: ...

    def score_batch(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> list[Scored]: ...


def score_batch(metric: Metric | BatchMetric, predictions: Sequence[str | None],
                examples: Sequence[Example]) -> list[Scored]:
    """Score a batch with any metric: a ``BatchMetric`` scores it whole; a per-example metric scores each
    example, and a missing answer scores 0 without calling it."""
    if isinstance(metric, BatchMetric):
        out = metric.score_batch(predictions, examples)
        if len(out) != len(predictions):
            raise TaskfitError(f"metric {type(metric).__name__} returned {len(out)} scores for "
                               f"{len(predictions)} predictions")
        return out
    return [Scored(0.0 if p is None else float(metric(p, ex))) for p, ex in zip(predictions, examples, strict=True)]


BUILTINS = {
    "exact_match": "taskfit.metrics.exact_match:create",
    "accuracy": "taskfit.metrics.exact_match:create",
    "contains": "taskfit.metrics.contains:create",
    "regex": "taskfit.metrics.regex:create",
    "numeric": "taskfit.metrics.numeric:create",
    "token_f1": "taskfit.metrics.token_f1:create",
    "fuzzy": "taskfit.metrics.fuzzy:create",
    "json_valid": "taskfit.metrics.json_valid:create",
    "json_match": "taskfit.metrics.json_match:create",
    "custom": "taskfit.metrics.custom:create",
    "judge": "taskfit.metrics.judge:create",
    "human": "taskfit.metrics.human:create",
}

metrics = Registry("metric", BUILTINS)


def build_metric(name: str, options: dict[str, Any], workspace: Any = None) -> Metric:
    """Look up metric ``name`` and create it with ``options`` (and ``workspace``, if it takes one)."""
    return create_with(metrics.get(name), workspace=workspace, **options)


def read_options(metric: str, given: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """Merge ``given`` over ``defaults``; unknown, missing or mistyped options raise TaskfitError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise TaskfitError(f"metric {metric!r}: unknown option {unknown[0]!r} (options: {known})",
                           field=f"metrics.{metric}.{unknown[0]}")
    out = {**defaults, **given}
    for name, value in out.items():
        if value is REQUIRED:
            raise TaskfitError(f"metric {metric!r}: option {name!r} is required", field=f"metrics.{metric}.{name}")
        _check_type(metric, name, value, defaults[name])
    return out


def _check_type(metric: str, name: str, value: Any, default: Any) -> None:
    """Reject a value whose type differs from the default's (ints are fine where a float is expected)."""
    if default is None or default is REQUIRED:  # None-default options check their own values
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TaskfitError(f"metric {metric!r}: option {name!r} must be {type(default).__name__}, "
                           f"got {value!r}", field=f"metrics.{metric}.{name}")


def gold_answers(example: Example) -> tuple[str, ...]:
    """The accepted answers: ``answers`` when given, else the target alone."""
    return example.answers or (example.target,)


def example_error(metric: str, message: str, example: Example) -> TaskfitError:
    """A TaskfitError about one example, pointing at its file and line."""
    file, _, line = example.source.rpartition(":")
    if not line.isdigit():
        return TaskfitError(f"metric {metric!r}: {message} (example {example.id!r})")
    return TaskfitError(f"metric {metric!r}: {message} (example {example.id!r})", file=file, line=int(line))
