"""A strategy of this package: the input, said ``times`` times on one line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import answer
from taskfit.prompts import messages, render_input
from taskfit.strategies.options import parse_options


class Options(BaseModel):
    """``strategies: [{parrot: {times: 2}}]``."""

    model_config = ConfigDict(extra="forbid")
    times: int = Field(1, ge=1, description="Times the input is repeated, space-separated.")


class Parrot:
    def __init__(self, options: Options, ctx: Any):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list, lm: Any) -> list:
        line = lambda ex: " ".join([render_input(self.ctx.parts, ex)] * self.options.times)  # noqa: E731
        return answer(examples, lambda ex: messages(None, [("user", line(ex))]), lm, self.ctx)


def create(spec: Any, ctx: Any) -> Parrot:
    return Parrot(parse_options(Options, spec), ctx)
