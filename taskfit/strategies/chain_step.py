"""chain_step: one step of a chain on its own, over a row whose ``steps`` field holds the earlier steps'
outputs: the prompt a student distilled from that step is trained on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import to_prediction
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.chain import Step, step_messages
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "One step of a chain, given the earlier steps' outputs in the row's `steps` field (step students)."


class ChainStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chain: str = Field(description="Row name of the chain the step belongs to (for messages).")
    step: Step = Field(description="The step, as written in the chain.")


class ChainStep:
    def __init__(self, options: ChainStepOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def prompt(self, ex: Example) -> tuple:
        """The step's chat; a row without ``steps`` (a plain data row, shown before and after training) reads
        every earlier output as empty."""
        fields = ex.fields if "steps" in ex.fields else {**ex.fields, "steps": _NoOutputs()}
        return step_messages(self.options.step, fields, self.options.chain)

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        traces = [Trace() for _ in examples]
        reqs = [GenerateRequest(self.prompt(ex), max_tokens=self.options.step.max_tokens) for ex in examples]
        results = lm.generate(reqs, traces, step=self.options.step.name)
        return [to_prediction(None if r.error else self.options.step.prefill + (r.texts[0] if r.texts else ""),
                              self.ctx, t) for r, t in zip(results, traces, strict=True)]


class _NoOutputs(dict):
    """Earlier outputs that were never made: every one reads as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""

    def __getattr__(self, key: str) -> str:
        return ""


Options = ChainStepOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ChainStep:
    return ChainStep(parse_options(ChainStepOptions, spec), ctx)
