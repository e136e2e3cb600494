"""zero_shot_cot: "Let's think step by step", then a second call that states the answer."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import answer
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Zero-shot chain-of-thought: reason after 'Let's think step by step.', then a second call extracts the answer."


class ZeroShotCoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trigger: str = Field("Let's think step by step.", description="Opening of the reasoning reply.")
    answer_trigger: str = Field("Therefore, the answer is", description="Opening of the answer, after the reasoning.")
    max_tokens: int = Field(256, ge=1, description="Reasoning length limit.")
    system: str | None = None


class ZeroShotCoT:
    def __init__(self, options: ZeroShotCoTOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def _turns(self, ex: Example) -> tuple[str | None, list[tuple[str, str]]]:
        parts = self.ctx.parts
        system = self.options.system or parts.system
        return system and render_row(parts, system, ex, "prompt.system"), [("user", user_turn(parts, ex))]

    def reasoning_prompts(self, examples: list[Example]) -> list[tuple]:
        return [messages(*self._turns(ex), self.options.trigger) for ex in examples]

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        traces = [Trace() for _ in examples]
        reqs = [GenerateRequest(p, max_tokens=o.max_tokens) for p in self.reasoning_prompts(examples)]
        results = lm.generate(reqs, traces, step="reason")
        reasoning = {ex.id: (r.texts[0] if r.texts and not r.error else "") for ex, r in zip(examples, results, strict=True)}

        def answer_prompt(ex: Example) -> tuple:
            # the reasoning stays in the assistant's turn, which continues with the answer trigger
            system, turns = self._turns(ex)
            return messages(system, turns, f"{o.trigger} {reasoning[ex.id].strip()}\n{o.answer_trigger}")

        # the answer call scores the labels or generates a short reply, like any single-call strategy
        answer_ctx = dataclasses.replace(self.ctx, parts=dataclasses.replace(self.ctx.parts, response_prefix=o.answer_trigger))
        preds = answer(examples, answer_prompt, lm, answer_ctx, traces)
        for p, r, ex in zip(preds, results, examples, strict=True):
            p.details["reasoning"] = reasoning[ex.id]
            if r.error:
                p.failed, p.answer = True, None
        return preds


Options = ZeroShotCoTOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ZeroShotCoT:
    return ZeroShotCoT(parse_options(ZeroShotCoTOptions, spec), ctx)
