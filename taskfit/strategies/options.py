"""Validating a strategy's options from the task file, with errors that name the strategy and the key."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from taskfit.errors import TaskfitError
from taskfit.taskfile import StrategySpec

T = TypeVar("T", bound=BaseModel)


def parse_options(model: type[T], spec: StrategySpec) -> T:
    try:
        return model.model_validate(spec.options)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise TaskfitError(f"strategy {spec.label()!r} ({spec.name}): {msgs}", field=f"strategies.{spec.label()}") from None
