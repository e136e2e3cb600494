"""A backend package of its own: replies with the last line of the prompt, repeated ``repeat`` times.

Installed for the tests by putting ``tests/plugins`` (this package and its ``.dist-info``, whose
``entry_points.txt`` registers ``echo`` in the ``taskfit.backends`` group) on the path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, backend_options


class Options(BaseModel):
    """``backend: echo``: the prompt's last line, repeated."""

    model_config = ConfigDict(extra="forbid")
    repeat: int = Field(1, ge=1, description="Times the line is repeated, space-separated.")


def create(spec: Any) -> EchoBackend:
    return EchoBackend(backend_options(spec), spec.label())


class EchoBackend:
    local = True
    supports_score = False
    supports_tools = False
    batch_size = 8

    def __init__(self, options: Options, name: str):
        self.options = options
        self.model_id = f"echo:{name}:{options.repeat}"

    def describe(self) -> dict[str, Any]:
        return {"backend": "echo", "repeat": self.options.repeat}

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        out = []
        for r in requests:
            lines = [line for line in str(r.messages[-1]["content"]).splitlines() if line.strip()]
            line = lines[-1].strip() if lines else ""
            out.append(GenerateResult(texts=[" ".join([line] * self.options.repeat)] * r.n))
        return out

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        raise NotImplementedError("echo generates only")
