"""cot: few-shot chain-of-thought. Demos show worked reasoning ending in "The answer is X."; the model
reasons the same way and the answer is read off its final line."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit import selection
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import messages, render_input, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import reasoned_replies
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Few-shot chain-of-thought: worked rationales (from a data field or the task file), answer from the last line."

_CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations: 3*3=<<3*3=9>>9
_FINAL_MARK = re.compile(r"\n?####.*$", re.S)


class WrittenDemo(BaseModel):
    model_config = ConfigDict(extra="allow")  # the input fields
    rationale: str
    answer: str


class CoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(3, ge=0, description="Demonstrations (0 with `demos` unset: none).")
    selection: Literal["fixed", "random", "knn", "balanced"] = "fixed"
    rationale_field: str | None = Field(None, description="Train field holding a worked solution, e.g. `solution`.")
    demos: list[WrittenDemo] | None = Field(None, description="Demos written in the task file (input fields, rationale, answer).")
    max_tokens: int = Field(256, ge=1)
    system: str | None = None


def clean_rationale(text: str) -> str:
    """A worked solution as prose: no calculator annotations, no trailing '#### answer' line."""
    return _FINAL_MARK.sub("", _CALC.sub("", text)).strip()


def demo_reply(rationale: str, answer: str) -> str:
    return f"{clean_rationale(rationale)}\nThe answer is {answer}."


class CoT:
    def __init__(self, options: CoTOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx
        if options.demos is None and options.k and not options.rationale_field:
            raise TaskfitError("cot needs `rationale_field` (a train field with worked solutions) or `demos`",
                               field="strategies.cot.rationale_field")
        if options.demos is None and options.k and not ctx.train:
            raise TaskfitError("cot draws demos from the train split, which this task lacks", field="data.train")

    def _demos(self, examples: list[Example]) -> list[list[tuple[dict[str, Any], str]]]:
        o = self.options
        if o.demos is not None:
            written = [(d.model_extra or {}, demo_reply(d.rationale, d.answer)) for d in o.demos]
            return [written for _ in examples]
        if not o.k:
            return [[] for _ in examples]
        pick = {"fixed": selection.fixed, "random": selection.random_demos, "balanced": selection.balanced}
        same = self.ctx.input_key  # no query is its own demo
        if o.selection == "knn":
            chosen = selection.knn(self.ctx.train, examples, o.k, self.ctx.seed,
                                   text=lambda e: render_input(self.ctx.parts, e), same=same)
        else:
            chosen = pick[o.selection](self.ctx.train, examples, o.k, self.ctx.seed, same=same)
        field = o.rationale_field
        for demos in chosen:
            for d in demos:
                if field not in d.fields:
                    raise TaskfitError(f"train row {d.id} has no field {field!r}", field="strategies.cot.rationale_field")
        return [[(d.fields, demo_reply(str(d.fields[field]), d.target)) for d in demos] for demos in chosen]

    def reasoning_prompts(self, examples: list[Example]) -> list[tuple]:
        """One chat per example: demo turns (input -> worked reasoning), then the example's input."""
        parts = self.ctx.parts
        system = self.options.system or parts.system
        out = []
        for ex, demos in zip(examples, self._demos(examples), strict=True):
            turns: list[tuple[str, str]] = []
            for i, (fields, reply) in enumerate(demos):
                demo_ex = Example(id="demo", fields=fields, target="", answers=())
                turns += [("user", user_turn(parts, demo_ex, with_instruction=i == 0)), ("assistant", reply)]
            turns.append(("user", user_turn(parts, ex, with_instruction=not demos)))
            out.append(messages(system and render_row(parts, system, ex, "prompt.system"), turns))
        return out

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        return reasoned_replies(self.reasoning_prompts(examples), self.options.max_tokens, lm, self.ctx)


Options = CoTOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> CoT:
    return CoT(parse_options(CoTOptions, spec), ctx)
