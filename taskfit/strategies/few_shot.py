"""few_shot: k solved examples from the train split before the input, chosen fixed, random, knn or balanced."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit import selection
from taskfit.answering import answer, answer_text
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import messages, render_input, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "k demonstrations (fixed, random, knn by MiniLM similarity, or balanced per label) as prior chat turns."


class FewShotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(4, ge=1, description="Number of demonstrations.")
    selection: Literal["fixed", "random", "knn", "balanced"] = "fixed"
    examples: list[str] | None = Field(None, description="fixed: ids of train rows to use, in order.")
    format: Literal["chat", "inline"] = Field(
        "chat", description="chat: each demo is a user/assistant turn pair; inline: all demos in one message.")
    system: str | None = None


class FewShot:
    def __init__(self, options: FewShotOptions, ctx: StrategyContext):
        if not ctx.train:
            raise TaskfitError("few_shot needs a train split to draw demonstrations from", field="data.train")
        self.options, self.ctx = options, ctx

    def demos_for(self, examples: list[Example]) -> list[list[Example]]:
        o, ctx = self.options, self.ctx
        pool, seed, same = ctx.train, ctx.seed, ctx.input_key  # no query is its own demo
        if o.selection == "fixed":
            return selection.fixed(pool, examples, o.k, seed, ids=o.examples, same=same)
        if o.selection == "random":
            return selection.random_demos(pool, examples, o.k, seed, same=same)
        if o.selection == "balanced":
            return selection.balanced(pool, examples, o.k, seed, labels=ctx.task.config.labels, same=same)
        return selection.knn(pool, examples, o.k, seed, text=lambda e: render_input(ctx.parts, e), same=same)

    def prompt(self, ex: Example, demos: list[Example]) -> tuple:
        parts = self.ctx.parts
        system = self.options.system or parts.system
        system = system and render_row(parts, system, ex, "prompt.system")
        if self.options.format == "inline":
            shots = "\n\n".join(f"{render_input(parts, d)}\n{parts.answer_prefix or 'Answer:'} {d.target}" for d in demos)
            instruction = render_row(parts, parts.instruction, ex, "prompt.instruction") if parts.instruction else ""
            body = "\n\n".join(x for x in [instruction, "Examples:\n\n" + shots, user_turn(parts, ex, with_instruction=False)] if x)
            return messages(system, [("user", body)], parts.response_prefix)
        turns: list[tuple[str, str]] = []
        for i, d in enumerate(demos):
            # the instruction goes with the first turn only, so every prompt shares the same prefix
            turns += [("user", user_turn(parts, d, with_instruction=i == 0)), ("assistant", answer_text(d.target, parts.response_prefix))]
        turns.append(("user", user_turn(parts, ex, with_instruction=not demos)))
        return messages(system, turns, parts.response_prefix)

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        demos = self.demos_for(examples)
        by_id = {ex.id: d for ex, d in zip(examples, demos, strict=True)}
        preds = answer(examples, lambda ex: self.prompt(ex, by_id[ex.id]), lm, self.ctx)
        for p, d in zip(preds, demos, strict=True):
            p.details["demos"] = [e.id for e in d]
        return preds


Options = FewShotOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> FewShot:
    return FewShot(parse_options(FewShotOptions, spec), ctx)
