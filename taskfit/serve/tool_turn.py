"""A chat turn with the request's `tools`: the model may call them, and the calls go back to the client.

The client runs its own tools (OpenAI function calling): a reply that calls one ends the turn with
``finish_reason: tool_calls``; the client sends the results back as ``tool`` messages and the turn goes on.
Tools of the served strategy (a `react`/`tools` row) run here, in the same loop. Backends with native
function calling get the tools as the request's ``tools``; others (local models) use the ReAct text
protocol of ``taskfit.strategies.react``, whose replies are read with its ``parse_action``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from taskfit.backends import GenerateRequest, Message
from taskfit.dataset import Example
from taskfit.lm import Trace
from taskfit.prompts import render, user_turn
from taskfit.strategies import StrategyContext
from taskfit.strategies.react import MAX_OBSERVATION_CHARS, STOP, TEXT_PROTOCOL, parse_action
from taskfit.tools import Tool, ToolResult, execute


@dataclass
class ToolTurn:
    """How the turn ended: a final text, or calls for the client to run."""

    final: str | None = None
    client_calls: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "arguments": JSON text}
    failed: bool = False
    trace: Trace = field(default_factory=Trace)


def client_tool(schema: dict[str, Any]) -> Tool:
    """A request tool as a Tool the protocol can describe; it runs on the client, never here."""
    fn = schema["function"]

    def runs_on_client(**_: Any) -> Any:
        raise RuntimeError(f"{fn['name']} runs on the client")

    return Tool(name=fn["name"], description=fn.get("description") or "",
                parameters=fn.get("parameters") or {"type": "object", "properties": {}}, function=runs_on_client)


def run_tool_turn(ex: Example, exchange: list[Message], client_tools: list[dict[str, Any]], tool_choice: Any,
                  server_tools: dict[str, Tool], lm: Any, ctx: StrategyContext, *, max_steps: int,
                  max_tokens: int) -> ToolTurn:
    """Loop: call the model; run server tools here; stop at a final answer or at calls for client tools."""
    clients = {t.name: t for t in (client_tool(s) for s in client_tools)}
    forced = _forced(tool_choice)
    native = getattr(lm.backend, "supports_tools", False) and forced is None  # no tool_choice on GenerateRequest
    turn = ToolTurn()
    if native:
        _native(turn, ex, exchange, clients, server_tools, lm, ctx, max_steps, max_tokens)
    else:
        _text(turn, ex, exchange, clients, server_tools, forced, lm, ctx, max_steps, max_tokens)
    return turn


def _forced(tool_choice: Any) -> str | None:
    """'' when any tool call is required, the tool's name when one is named, else None."""
    if tool_choice == "required":
        return ""
    if isinstance(tool_choice, dict):
        return str((tool_choice.get("function") or {}).get("name") or "")
    return None


def _system(ctx: StrategyContext, ex: Example) -> str | None:
    system = ctx.parts.system
    return system and render(system, ex.fields, "prompt.system")


def _native(turn: ToolTurn, ex: Example, exchange: list[Message], clients: dict[str, Tool],
            server: dict[str, Tool], lm: Any, ctx: StrategyContext, max_steps: int, max_tokens: int) -> None:
    system = _system(ctx, ex)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user_turn(ctx.parts, ex)}, *exchange]
    schemas = tuple([t.schema() for t in clients.values()] + [t.schema() for t in server.values()])
    for _ in range(max_steps):
        (res,) = lm.generate([GenerateRequest(tuple(messages), max_tokens=max_tokens, tools=schemas)], [turn.trace])
        if res.error:
            turn.failed = True
            return
        text = res.texts[0] if res.texts else ""
        wanted = [c for c in res.tool_calls if c["name"] in clients]
        if wanted:
            turn.client_calls = [{"id": c["id"], "name": c["name"], "arguments": _json(c["arguments"])} for c in wanted]
            return
        if not res.tool_calls:
            turn.final = text
            return
        messages.append({"role": "assistant", "content": text, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": _json(c["arguments"])}}
            for c in res.tool_calls]})
        for c in res.tool_calls:
            result = _run_server_tool(turn, server, c["name"], c["arguments"] if isinstance(c["arguments"], dict)
                                      else None, None if isinstance(c["arguments"], dict) else "arguments are not JSON")
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": result.output})
    turn.final = ""  # the step limit: nothing more to say


def _text(turn: ToolTurn, ex: Example, exchange: list[Message], clients: dict[str, Tool], server: dict[str, Tool],
          forced: str | None, lm: Any, ctx: StrategyContext, max_steps: int, max_tokens: int) -> None:
    tools = {**server, **clients}
    system = _system(ctx, ex)
    first = clients.get(forced or "") or next(iter(tools.values()))
    protocol = TEXT_PROTOCOL.format(tools="\n\n".join(_describe(t) for t in tools.values()), first=first.name,
                                    example=json.dumps(dict.fromkeys(first.required, "...")))
    system = f"{system}\n\n{protocol}" if system else protocol
    messages: list[Message] = [{"role": "system", "content": system},
                               {"role": "user", "content": user_turn(ctx.parts, ex)}]
    scratchpad = "Thought:" + _replay(exchange)
    for step in range(max_steps):
        lead = ""
        if forced is not None and step == 0:  # a required call: the reply starts inside an Action line
            lead = f" I need to call {forced}.\nAction: {forced}\nAction Input:" if forced else \
                " I need to use a tool.\nAction:"
        request = GenerateRequest((*messages, {"role": "assistant", "content": scratchpad + lead}),
                                  max_tokens=max_tokens, stop=STOP)
        (res,) = lm.generate([request], [turn.trace])
        if res.error:
            turn.failed = True
            return
        text = lead + (res.texts[0] if res.texts else "")
        action = parse_action(text, tools)
        if action.final is not None:
            turn.final = action.final
            return
        if action.tool is None:  # neither an action nor "Final Answer:": the reply is the answer
            turn.final = text.strip()
            return
        if action.tool in clients and action.arguments is not None:
            turn.client_calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "name": action.tool,
                                  "arguments": json.dumps(action.arguments)}]
            return
        if action.tool in clients:  # unreadable arguments: the model gets the error as its observation
            observation = f"Error: {action.error or 'no arguments'}"
        else:
            observation = _run_server_tool(turn, server, action.tool, action.arguments, action.error).output
        scratchpad = f"{scratchpad}{text[:action.end].rstrip()}\nObservation: {observation}\nThought:"
    turn.final = ""


def _replay(exchange: list[Message]) -> str:
    """The client's earlier tool calls and their results, written as the text protocol's scratchpad."""
    results = {m.get("tool_call_id"): str(m.get("content") or "") for m in exchange if m["role"] == "tool"}
    out = ""
    for m in exchange:
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            out += (f" I need to call {fn.get('name')}.\nAction: {fn.get('name')}\nAction Input: "
                    f"{fn.get('arguments') or '{}'}\nObservation: {results.get(call.get('id'), '(no result)')}\nThought:")
    return out


def _run_server_tool(turn: ToolTurn, server: dict[str, Tool], name: str, arguments: dict[str, Any] | None,
                     error: str | None) -> ToolResult:
    """Run one of the strategy's tools; the run is its own trace entry (n = 0: not a model call)."""
    start = time.perf_counter()
    tool = server.get(name)
    if tool is None:
        result = ToolResult(output=f"Error: unknown tool {name!r}", error=f"unknown tool {name!r}")
    elif error is not None or arguments is None:
        result = ToolResult(output=f"Error: {error or 'no arguments'}", error=error or "no arguments")
    else:
        result = execute(tool, arguments)
    if len(result.output) > MAX_OBSERVATION_CHARS:
        result = ToolResult(output=result.output[:MAX_OBSERVATION_CHARS] + " ...(truncated)", error=result.error)
    turn.trace.calls.append({
        "step": "tool", "kind": "tool", "messages": [], "params": {"n": 0, "name": name, "arguments": arguments},
        "output": result.output, "tokens_in": 0, "tokens_out": 0, "latency_ms": (time.perf_counter() - start) * 1000,
        "cached": False, "error": result.error})
    return result


def _json(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _describe(tool: Tool) -> str:
    return f"{tool.name}: {tool.description}\n  parameters: {json.dumps(tool.parameters.get('properties', {}))}"
