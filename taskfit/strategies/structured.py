"""structured: the sectioned prompt template (objective/persona, instructions, constraints, context,
output format, examples, recap), each section optional, in the system message."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit import selection
from taskfit.answering import answer
from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import messages, render_input, render_row, structured_prompt, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Sectioned template: persona/objective, instructions, constraints, context, output format, examples, recap."


class StructuredOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    persona: str | None = Field(None, description="Who the model is, e.g. 'an experienced film critic'.")
    objective: str | None = Field(None, description="The task in one sentence; default: the task description.")
    instructions: list[str] | str | None = None
    constraints: list[str] | str | None = None
    context: str | None = None
    output_format: str | None = Field(None, description="Default: the task's output format.")
    recap: str | None = Field(None, description="Default: repeats the output format.")
    k: int = Field(0, ge=0, description="Demonstrations in the EXAMPLES section.")
    selection: Literal["fixed", "balanced", "random"] = "balanced"


class Structured:
    def __init__(self, options: StructuredOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def system_prompt(self, ex: Example, demos: list[Example]) -> str:
        o, parts, c = self.options, self.ctx.parts, self.ctx.task.config
        objective = o.objective or c.description or (render_row(parts, parts.instruction, ex, "prompt.instruction") if parts.instruction else "")
        if o.persona:
            objective = f"You are {o.persona}. Your task: {objective}".strip()
        instructions = o.instructions
        if instructions is None and parts.instruction:
            instructions = render_row(parts, parts.instruction, ex, "prompt.instruction")
        output_format = o.output_format or parts.output_format
        shots = "\n\n".join(f"{render_input(parts, d)}\nOutput: {d.target}" for d in demos)
        return structured_prompt({
            "objective": objective, "instructions": instructions, "constraints": o.constraints,
            "context": o.context, "output_format": output_format, "examples": shots,
            "recap": o.recap or (output_format and f"Remember: {output_format}"),
        })

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o, ctx = self.options, self.ctx
        if o.k and ctx.train:
            pick = {"fixed": selection.fixed, "random": selection.random_demos, "balanced": selection.balanced}[o.selection]
            kwargs = {"labels": ctx.task.config.labels} if o.selection == "balanced" else {}
            demos = pick(ctx.train, examples, o.k, ctx.seed, same=ctx.input_key, **kwargs)  # none is its own demo
        else:
            demos = [[] for _ in examples]
        parts = ctx.parts
        by_id = {ex.id: d for ex, d in zip(examples, demos, strict=True)}
        return answer(examples, lambda ex: messages(self.system_prompt(ex, by_id[ex.id]), [
            ("user", user_turn(parts, ex, with_instruction=False))], parts.response_prefix), lm, ctx)


Options = StructuredOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Structured:
    return Structured(parse_options(StructuredOptions, spec), ctx)
