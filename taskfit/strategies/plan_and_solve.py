"""plan_and_solve: zero-shot chain-of-thought whose trigger asks for a plan first, then its execution
(Wang et al., 2023, the PS+ prompt), then a second call that states the answer."""

from __future__ import annotations

from pydantic import Field

from taskfit.strategies import StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.zero_shot_cot import ZeroShotCoT, ZeroShotCoTOptions
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Plan-and-solve: devise a plan, carry it out step by step (extracting variables, calculating carefully), then answer."

PS_PLUS = ("Let's first understand the problem, extract relevant variables and their corresponding numerals, and "
           "devise a plan. Then, let's carry out the plan, calculate intermediate variables (pay attention to correct "
           "numerical calculation and commonsense), solve the problem step by step, and show the answer.")


class PlanAndSolveOptions(ZeroShotCoTOptions):
    trigger: str = Field(PS_PLUS, description="Opening of the reasoning reply: plan, then solve.")


Options = PlanAndSolveOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ZeroShotCoT:
    return ZeroShotCoT(parse_options(PlanAndSolveOptions, spec), ctx)
