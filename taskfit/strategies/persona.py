"""persona: a role prompt ("You are an experienced ...") in front of any other strategy."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.strategies import Prediction, StrategyContext, strategies
from taskfit.strategies.options import check_base_options, parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Role prompt ('You are an experienced ...') as the system message, combined with any strategy."


class PersonaOptions(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest configures the base strategy
    persona: str = Field(description="Who the model is, e.g. 'an experienced film critic'.")
    base: str = Field("zero_shot", description="The strategy the persona is added to.")

    @model_validator(mode="after")
    def _base_takes_the_rest(self) -> PersonaOptions:
        if self.base == "persona":
            raise ValueError("persona cannot wrap persona")
        check_base_options(self.base, self.model_extra)
        return self


class Persona:
    def __init__(self, base, system: str):
        self.base, self.system = base, system

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        preds = self.base.predict(examples, lm)
        for p in preds:
            p.details["persona"] = self.system
        return preds


Options = PersonaOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Persona:
    o = parse_options(PersonaOptions, spec)
    system = f"You are {o.persona.strip().rstrip('.')}."
    if ctx.parts.system:
        system += " " + ctx.parts.system
    inner_ctx = dataclasses.replace(ctx, parts=dataclasses.replace(ctx.parts, system=system))
    inner = StrategySpec(name=o.base, id=spec.label(), **(o.model_extra or {}))
    return Persona(strategies.get(o.base)(inner, inner_ctx), system)
