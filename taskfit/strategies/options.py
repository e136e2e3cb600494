"""A strategy's options: the module-level ``Options`` model each strategy declares, checked when the task is loaded
(taskfit.plugins.check_task), then handed to ``create``."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from taskfit import plugins
from taskfit.taskfile import StrategySpec

T = TypeVar("T", bound=BaseModel)


def parse_options(model: type[T], spec: StrategySpec) -> T:
    """``spec``'s options as ``model``: those parsed at load, else (a row built in code) validated now, with
    an error naming the strategy and the key."""
    parsed = spec._parsed
    if type(parsed) is model and parsed.model_dump(exclude_unset=True) == spec.options:  # not since changed
        return parsed
    return plugins.parse_options(model, spec.options, f"strategy {spec.label()!r} ({spec.name})",
                                 f"strategies.{spec.label()}")


def check_base_options(base: str, extra: dict[str, Any] | None) -> None:
    """For a strategy that wraps another (``base``): the keys it passes on, checked against the base's Options
    (a ValueError, so that the wrapper's own validation reports it)."""
    from taskfit.strategies import strategies

    if base not in strategies.names():
        raise ValueError(f"unknown base strategy {base!r}; known strategies: {', '.join(strategies.names())}")
    try:
        (strategies.options(base) or plugins.AnyOptions).model_validate(extra or {})
    except ValidationError as e:
        raise ValueError(f"{plugins.problems(e)} (options of the base strategy {base!r})") from None
