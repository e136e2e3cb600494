"""rationale: the instruction and the input; the model writes its reasoning, then "The answer is X.", and the
answer is read off the end. The prompt a student distilled from a reasoning teacher is trained on and used with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import reasoned_replies
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Instruction + input; the model reasons, then states the answer (for rationale-distilled students)."


class RationaleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(256, ge=1, description="Length limit of the reasoning and the answer.")
    system: str | None = None


class Rationale:
    def __init__(self, options: RationaleOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def prompt(self, ex: Example) -> tuple:
        """No reply prefix: the reply is the reasoning, which ends with the answer."""
        parts = self.ctx.parts
        system = self.options.system or parts.system
        return messages(system and render_row(parts, system, ex, "prompt.system"), [("user", user_turn(parts, ex))])

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        return reasoned_replies([self.prompt(ex) for ex in examples], self.options.max_tokens, lm, self.ctx)


Options = RationaleOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Rationale:
    return Rationale(parse_options(RationaleOptions, spec), ctx)
