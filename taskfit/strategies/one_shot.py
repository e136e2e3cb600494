"""one_shot: few_shot with a single demonstration."""

from __future__ import annotations

from taskfit.strategies import StrategyContext
from taskfit.strategies.few_shot import FewShot, FewShotOptions
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "One demonstration before the input (few_shot with k=1; any selection)."


def create(spec: StrategySpec, ctx: StrategyContext) -> FewShot:
    one = StrategySpec(name="few_shot", id=spec.label(), **{"k": 1, **spec.options})
    return FewShot(parse_options(FewShotOptions, one), ctx)
