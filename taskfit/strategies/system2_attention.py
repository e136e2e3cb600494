"""system2_attention: the model first rewrites the input keeping only what is relevant to the question and
free of opinion or leading hints (Weston & Sukhbaatar, 2023), then answers from the rewritten input alone."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import render_input, render_row
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import Steps, with_details
from taskfit.taskfile import StrategySpec

DESCRIPTION = "System 2 Attention: rewrite the input to keep only relevant, unbiased content, then answer from the rewrite."


class System2AttentionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rewrite_prompt: str = Field(
        "Given the following text, extract the part that is relevant and unbiased (not the writer's opinion or "
        "hints about the answer), so that using that text alone would be good context for an unbiased answer "
        "to the question or task.\n\nTask: {instruction}\n\nText:\n{input}\n\nRelevant, unbiased context:",
        description="The rewrite call; {instruction} and {input} are filled in.")
    rewrite_tokens: int = Field(160, ge=1, description="Length of the rewritten input.")
    system: str | None = None


class System2Attention:
    def __init__(self, options: System2AttentionOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o, parts = self.options, self.ctx.parts
        s = Steps(examples, lm, self.ctx, o.system)
        instruction = {ex.id: render_row(parts, parts.instruction, ex, "prompt.instruction") if parts.instruction else "" for ex in examples}
        rewritten = s.ask({ex.id: o.rewrite_prompt.format(instruction=instruction[ex.id], input=render_input(parts, ex))
                           for ex in examples}, "rewrite", o.rewrite_tokens)
        user = {}
        for ex in examples:
            # the rewrite takes the input's place in the task's own user turn
            chunks = [instruction[ex.id], rewritten.get(ex.id, "").strip(), parts.output_format, parts.answer_prefix]
            user[ex.id] = "\n\n".join(c for c in chunks if c)
        return with_details(s.finish_user(user), examples, rewritten=rewritten)


Options = System2AttentionOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> System2Attention:
    return System2Attention(parse_options(System2AttentionOptions, spec), ctx)
