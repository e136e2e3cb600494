"""optimized: a prompt program found by `taskfit optimize` (instruction, demonstrations, base strategy), loaded by
its run id (`strategy: optimized:<run-id>`)."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.optimize.candidates import ProgramSpec
from taskfit.strategies import Prediction, Strategy, StrategyContext, strategies
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "The prompt `taskfit optimize` found (optimized:<run-id>): its instruction, demos and base strategy."


class OptimizedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(description="Id (or unique prefix) of the optimization run, as printed by `taskfit optimize`.")


class Optimized:
    def __init__(self, inner: Strategy, run_id: str):
        self.inner, self.run_id = inner, run_id

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        preds = self.inner.predict(examples, lm)
        for p in preds:
            p.details["optimized"] = self.run_id
        return preds


def build(program: ProgramSpec, ctx: StrategyContext) -> Strategy:
    """The base strategy with the program's instruction and its fixed demos (the train split is not consulted)."""
    demos = [d.example() for d in program.demos]
    ctx = dataclasses.replace(ctx, parts=dataclasses.replace(ctx.parts, instruction=program.instruction), train=demos)
    options = dict(program.options)
    if program.base == "few_shot":
        options.update(k=max(1, len(demos)), selection="fixed", examples=[d.id for d in demos])
    elif program.base == "cot":
        options.update(k=len(demos), demos=[{**d.fields, "rationale": d.rationale or "", "answer": d.target}
                                            for d in program.demos])
    spec = StrategySpec.model_validate({"name": program.base, **options})
    return strategies.get(program.base)(spec, ctx)


Options = OptimizedOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Optimized:
    options = parse_options(OptimizedOptions, spec)
    if ctx.workspace is None:
        raise TaskfitError(f"strategy {spec.label()!r}: an optimization run is looked up in a workspace; none "
                           "was given", field=f"strategies.{spec.label()}")
    record = ctx.workspace.optimizations.get(options.run)
    if record is None:
        raise TaskfitError(f"strategy {spec.label()!r}: no optimization run matches {options.run!r} "
                           "(see `taskfit optimizations`)", field=f"strategies.{spec.label()}")
    if record.task_name != ctx.task.config.name:
        raise TaskfitError(f"strategy {spec.label()!r}: optimization {record.id} was made for task "
                           f"{record.task_name!r}, not {ctx.task.config.name!r}", field=f"strategies.{spec.label()}")
    return Optimized(build(record.spec, ctx), record.id)
