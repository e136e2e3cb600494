"""Model backends: one small interface (generate, score) over local and remote models.

Adding a backend: write ``taskfit/backends/<name>.py`` with a ``create(spec) -> Backend`` function and an
``Options`` pydantic model of the keys its model entries take, and add one line to ``BUILTINS`` (a package of
its own registers ``create`` in the ``taskfit.backends`` entry-point group instead). ``backend_options(spec)``
gives ``create`` its validated options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from taskfit.registry import Registry, create_with

# {"role": "system" | "user" | "assistant" | "tool", "content": "..."}; an assistant message may also carry
# "tool_calls" and a tool message "tool_call_id" (OpenAI chat form), which backends pass on unchanged
Message = dict[str, Any]


@dataclass(frozen=True)
class GenerateRequest:
    messages: tuple[Message, ...] | list[Message]
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    n: int = 1
    seed: int = 0
    # tools the model may call, as OpenAI {"type": "function", "function": {...}} dicts; only backends with
    # ``supports_tools`` send them
    tools: tuple[dict[str, Any], ...] = ()


@dataclass
class GenerateResult:
    texts: list[str]
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    # the first choice's tool calls: {"id", "name", "arguments": dict (the raw string if it was not JSON)}
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ScoreRequest:
    """Log-likelihood of each continuation as the start of the assistant's reply to ``messages``."""

    messages: tuple[Message, ...] | list[Message]
    continuations: tuple[str, ...]


@dataclass
class ScoreResult:
    logprobs: list[float]  # summed log-probability per continuation
    token_counts: list[int] = field(default_factory=list)  # tokens per continuation
    tokens_in: int = 0
    latency_ms: float = 0.0
    error: str | None = None


class Backend(Protocol):
    """What every backend provides. Batched: one call may carry many requests."""

    model_id: str  # stable identity used in cache keys (name + weights fingerprint)
    supports_score: bool
    local: bool  # runs on this machine (cost is time, not money)
    batch_size: int  # requests per call that make good use of the backend; the cache commits after each

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]: ...

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...

    def describe(self) -> dict[str, Any]: ...


BUILTINS = {
    "hf": "taskfit.backends.hf:create",
    "openai": "taskfit.backends.openai:create",
    "scripted": "taskfit.backends.scripted:create",
    "tuned": "taskfit.backends.tuned:create",
}

backends = Registry("backend", BUILTINS)


def backend_options(spec: Any) -> Any:
    """``spec``'s own keys validated against the ``Options`` model of its backend."""
    from taskfit.plugins import parse_options

    return parse_options(backends.options(spec.backend), spec.options, f"model {spec.name or spec.backend!r} "
                         f"(backend {spec.backend})", "models[]")


def build_backend(spec: Any, workspace: Any = None) -> Backend:
    """The backend ``spec`` names, given the workspace if it keeps state there (a tuned model's record)."""
    return create_with(backends.get(spec.backend), spec, workspace=workspace)
