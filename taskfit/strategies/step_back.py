"""step_back: first ask what general concept or principle the question is about and answer that, then reason
from the principle to the task's answer (Zheng et al., 2024); the last call states the answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps, with_details
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Step-back prompting: state the general principle behind the question, then reason from it; then answer."


class StepBackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    abstraction_prompt: str = Field(
        "{task}\n\nDo not answer yet. Take a step back: what general concept, principle or fact is this question "
        "about? State it in one or two sentences.", description="The step-back call; {task} is filled in.")
    abstraction_tokens: int = Field(96, ge=1)
    reason: bool = Field(True, description="Reason step by step from the principle before answering (one more call).")
    trigger: str = "Let's think step by step."
    max_tokens: int = Field(192, ge=1, description="Reasoning length.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


class StepBack:
    def __init__(self, options: StepBackOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        principle = s.ask(s.task_in(o.abstraction_prompt), "step_back", o.abstraction_tokens)
        user = {i: f"Background principle: {principle.get(i, '').strip()}\n\n{t}" for i, t in s.task.items()}
        if o.reason:
            reasoning = s.ask({i: user[i] for i in principle}, "reason", o.max_tokens, prefill=o.trigger)
            reasoning = {i: f"{o.trigger} {r.strip()}" for i, r in reasoning.items()}
            preds = s.finish_after(reasoning, user, o.answer_trigger)
        else:
            preds = s.finish_user(user)
        return with_details(preds, examples, principle=principle)


Options = StepBackOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> StepBack:
    return StepBack(parse_options(StepBackOptions, spec), ctx)
