"""zero_shot: the instruction and the input, nothing else."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from taskfit.answering import answer
from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Instruction + input, no examples: the baseline every other strategy must beat."


class ZeroShotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None  # overrides prompt.system for this row


class ZeroShot:
    def __init__(self, options: ZeroShotOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        return answer(examples, self.prompt, lm, self.ctx)

    def prompt(self, ex: Example) -> tuple:
        parts = self.ctx.parts
        system = self.options.system or parts.system
        return messages(system and render_row(parts, system, ex, "prompt.system"), [("user", user_turn(parts, ex))], parts.response_prefix)


Options = ZeroShotOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ZeroShot:
    return ZeroShot(parse_options(ZeroShotOptions, spec), ctx)
