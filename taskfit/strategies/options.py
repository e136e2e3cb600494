"""Validating a strategy's options from the task file, with errors that name the strategy and the key."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from taskfit import plugins
from taskfit.taskfile import StrategySpec

T = TypeVar("T", bound=BaseModel)


def parse_options(model: type[T], spec: StrategySpec) -> T:
    return plugins.parse_options(model, spec.options, f"strategy {spec.label()!r} ({spec.name})",
                                 f"strategies.{spec.label()}")
