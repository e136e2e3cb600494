"""one_shot: few_shot with a single demonstration."""

from __future__ import annotations

from pydantic import Field

from taskfit.strategies import StrategyContext
from taskfit.strategies.few_shot import FewShot, FewShotOptions
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "One demonstration before the input (few_shot with k=1; any selection)."


class Options(FewShotOptions):
    k: int = Field(1, ge=1, description="Number of demonstrations.")


def create(spec: StrategySpec, ctx: StrategyContext) -> FewShot:
    return FewShot(parse_options(Options, spec), ctx)
