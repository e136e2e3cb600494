"""metacognitive: the five stages of metacognitive prompting (Wang & Zhao, 2024) in one reasoning reply:
understand the input, form a preliminary judgment, critically evaluate it, decide and explain, state a
confidence; a second call states the answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Metacognitive prompting: understand, preliminary judgment, critical self-evaluation, decision, confidence; then answer."

STAGES = (
    "As you answer, go through these stages:\n"
    "1. Clarify your understanding of the input.\n"
    "2. Make a preliminary judgment.\n"
    "3. Critically assess your preliminary judgment; reconsider it if it is unsure.\n"
    "4. Confirm your final decision and explain the reasoning behind it.\n"
    "5. Evaluate your confidence (0-100%) in that decision."
)


class MetacognitiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: str = Field(STAGES, description="The stages, appended to the task.")
    max_tokens: int = Field(256, ge=1, description="Length of the staged reasoning.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


class Metacognitive:
    def __init__(self, options: MetacognitiveOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        return s.reason_then_answer(s.task_then(o.stages), "stages", o.max_tokens, o.answer_trigger, prefill="1.")


Options = MetacognitiveOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Metacognitive:
    return Metacognitive(parse_options(MetacognitiveOptions, spec), ctx)
