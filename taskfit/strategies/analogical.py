"""analogical: the model recalls a few relevant solved problems of its own, then solves the task (Yasunaga
et al., 2024: self-generated exemplars instead of retrieved or written ones); a second call states the answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Analogical prompting: the model writes its own relevant solved examples, then solves the task; then answers."


class AnalogicalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exemplars: int = Field(3, ge=1, description="Self-generated exemplars asked for.")
    prompt: str = Field(
        "# Instructions:\nRecall {n} relevant and distinct problems. For each, describe it and explain its "
        "solution. Then solve the initial problem step by step.",
        description="Appended to the task; {n} is the number of exemplars.")
    max_tokens: int = Field(320, ge=1, description="Length of the exemplars and the solution together.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


class Analogical:
    def __init__(self, options: AnalogicalOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        return s.reason_then_answer(s.task_then(o.prompt.format(n=o.exemplars)), "recall_and_solve", o.max_tokens,
                                    o.answer_trigger)


Options = AnalogicalOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Analogical:
    return Analogical(parse_options(AnalogicalOptions, spec), ctx)
