"""chain: a multi-step pipeline declared in the task file; each step is a prompt whose output (text or JSON)
feeds the later steps' templates as ``steps.<name>``; the last step's output is the answer."""

from __future__ import annotations

from typing import Any, Literal

from jinja2 import meta
from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import to_prediction
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.parsing import extract_json
from taskfit.prompts import _env, messages, render
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Multi-step pipeline from the task file: each step's output (text or JSON) feeds the next steps."


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Referenced by later steps as {{ steps.<name> }}.")
    prompt: str = Field(description="Jinja2 over the row's fields and `steps` (earlier outputs).")
    output: Literal["text", "json"] = Field("text", description="json: the first JSON value in the reply.")
    max_tokens: int = 128
    system: str | None = None
    prefill: str = Field("", description="Opening of the reply the model continues, e.g. '{\"verdict\": \"' "
                         "to hold a small model to a JSON shape; it is part of the step's output.")
    model: str | None = Field(None, description="A model for this step alone, `tuned:<id>` (e.g. a student "
                              "distilled from this step); default: the row's model.")


class ChainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1)


def step_messages(step: Step, variables: dict[str, Any], label: str) -> tuple:
    """The chat one step sends: its prompt over the row's fields and ``steps`` (earlier outputs), its prefill."""
    text = render(step.prompt, variables, f"strategies.{label}.steps.{step.name}")
    system = step.system and render(step.system, variables)
    return messages(system, [("user", text)], step.prefill)


class Chain:
    def __init__(self, options: ChainOptions, ctx: StrategyContext, label: str):
        self.options, self.ctx, self.label = options, ctx, label
        self._checked = False
        self._models: dict[str, Any] = {}  # per-step backends, loaded once

    def _lm_for(self, step: Step, lm: LM):
        """The row's model, or the step's own (behind the same call cache)."""
        if not step.model or not hasattr(lm, "cache"):  # a dry run prices the row's model
            return lm
        if step.model not in self._models:
            from taskfit.backends import build_backend
            from taskfit.taskfile import ModelSpec

            spec = ModelSpec(backend="tuned" if step.model.startswith("tuned:") else "hf", path=step.model)
            self._models[step.model] = LM(build_backend(spec, self.ctx.workspace), lm.cache)
        return self._models[step.model]

    def _check(self, fields: set[str]) -> None:
        """Every template may use the row's fields and the names of earlier steps only."""
        seen: list[str] = []
        for n, step in enumerate(self.options.steps):
            where = f"strategies.{self.label}.steps[{n}].prompt"
            used = meta.find_undeclared_variables(_env.parse(step.prompt))
            missing = sorted(used - fields - {"steps"})
            if missing:
                raise TaskfitError(f"{where}: references field(s) {missing} that the data does not have "
                                   f"(fields: {', '.join(sorted(fields))})", file=str(self.ctx.task.path), field=where)
            for ref in _step_refs(step.prompt):
                if ref not in seen:
                    raise TaskfitError(f"{where}: uses steps.{ref}, which is not an earlier step ({seen or 'none'})",
                                       file=str(self.ctx.task.path), field=where)
            seen.append(step.name)
        self._checked = True

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        if not self._checked:
            self._check(set(examples[0].fields))
        traces = {ex.id: Trace() for ex in examples}
        outputs: dict[str, dict[str, Any]] = {ex.id: {} for ex in examples}
        raw: dict[str, str | None] = {ex.id: "" for ex in examples}
        active = list(examples)
        for step in self.options.steps:
            reqs = [GenerateRequest(step_messages(step, {**ex.fields, "steps": outputs[ex.id]}, self.label),
                                    max_tokens=step.max_tokens) for ex in active]
            results = self._lm_for(step, lm).generate(reqs, [traces[ex.id] for ex in active], step=step.name)
            still = []
            for ex, r in zip(active, results, strict=True):
                if r.error:
                    raw[ex.id] = None
                    continue
                text = step.prefill + (r.texts[0] if r.texts else "")
                raw[ex.id] = text
                value = extract_json(text) if step.output == "json" else text.strip()
                outputs[ex.id][step.name] = value if value is not None else text.strip()
                still.append(ex)
            active = still
        return [to_prediction(raw[ex.id], self.ctx, traces[ex.id], details={"steps": outputs[ex.id]}) for ex in examples]


def _step_refs(template: str) -> set[str]:
    import re

    return set(re.findall(r"steps\.(\w+)", template)) | set(re.findall(r"steps\[['\"](\w+)['\"]\]", template))


Options = ChainOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Chain:
    return Chain(parse_options(ChainOptions, spec), ctx, spec.label())
