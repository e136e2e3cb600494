"""The OpenAI chat-completions wire format: request validation and response bodies."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A conversation id, in the body or the X-Conversation-Id header: a key the client chose, stored and echoed back
CONVERSATION_ID = r"^[A-Za-z0-9._:-]{1,200}$"


class _Open(BaseModel):
    # clients send many optional OpenAI fields (temperature, top_p, user, ...): accepted; the served
    # configuration decides decoding
    model_config = ConfigDict(extra="allow", strict=True)


class ToolFunction(_Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Open):
    type: Literal["function"]
    function: ToolFunction


class ToolCallFunction(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: dict[str, str]


class StreamOptions(_Open):
    include_usage: bool = False


def _finite(low: float, high: float) -> Any:
    # NaN passes every range check (all comparisons with it are false) and JSON parsers accept it: refused here
    return Field(None, ge=low, le=high, allow_inf_nan=False)


class ChatRequest(_Open):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    n: int = Field(1, ge=1, le=1)  # one choice: the served pipeline is deterministic per request
    conversation_id: str | None = Field(None, pattern=CONVERSATION_ID,
                                        description="1-200 of A-Z a-z 0-9 . _ : -")
    # OpenAI's sampling fields: the served configuration decides decoding, but a value OpenAI would refuse
    # (out of range, NaN, infinite) is refused here too rather than silently ignored
    temperature: float | None = _finite(0, 2)
    top_p: float | None = _finite(0, 1)
    presence_penalty: float | None = _finite(-2, 2)
    frequency_penalty: float | None = _finite(-2, 2)


def completion(rid: str, model: str, content: str | None, tool_calls: list[dict[str, Any]], finish_reason: str,
               usage: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [_call(c) for c in tool_calls]
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage, "taskfit": extra}


def chunks(rid: str, model: str, content: str | None, tool_calls: list[dict[str, Any]], finish_reason: str,
           usage: dict[str, int] | None) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` bodies: the role, the content word by word (or the tool calls), the finish
    reason, and the usage when asked for."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in re.findall(r"\s*\S+|\s+", content or ""):
        yield chunk({"content": piece})
    for i, c in enumerate(tool_calls):
        yield chunk({"tool_calls": [{"index": i, **_call(c)}]})
    yield chunk({}, finish_reason)
    if usage is not None:
        yield {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
               "usage": usage}


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _call(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
