"""react / tools: the model calls tools in a loop (ReAct: Yao et al., 2023) before it answers.

Two protocols. ``native``: the backend's own function calling (OpenAI-compatible servers): the request
carries the tool schemas, the reply's tool calls are run and answered with ``tool`` messages. ``text``: for
models without function calling (local models), the prompt describes the tools and the
Thought / Action / Action Input / Observation format, and the model continues its own scratchpad (an
assistant prefill, as ``prompt.response_prefix`` is) until it writes ``Final Answer:``. Either way every
model call is batched across the examples still running, and every tool run is its own trace entry.
"""

from __future__ import annotations

import ast
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import to_prediction
from taskfit.backends import GenerateRequest, GenerateResult, Message
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.prompts import render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec
from taskfit.tools import Tool, ToolResult, execute, load_tool

DESCRIPTION = ("Tool use (ReAct): the model calls tools (calculator, weather, your functions) in a loop, "
               "natively or through a Thought/Action/Observation text protocol, then answers.")

MAX_OBSERVATION_CHARS = 2000  # a runaway tool output must not crowd the question out of a small context
STOP = ("Observation:",)  # the model must not write the tool's result itself
FINAL_STOP = ("Observation:", "\nThought:", "\nAction:")
LIMIT_NOTE = "I have used all my tool calls, so I must answer now.\nFinal Answer:"
NATIVE_LIMIT_NOTE = "You have used all your tool calls. Give your final answer now, without calling a tool."

# a filled-in demonstration, not the classic "Action: the tool to use" placeholders: small models copy those
# lines verbatim, while they adapt a concrete call to the question
TEXT_PROTOCOL = """You can use these tools:

{tools}

To use a tool, reply in this format:
Thought: I need to call {first}.
Action: {first}
Action Input: {example}

The tool's result is then given to you as "Observation: ...". Use the tools as often as you need. When you know \
the answer, reply:
Thought: I now know the final answer.
Final Answer: ..."""


class ReactOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tools: list[str | dict[str, Any]] = Field(
        min_length=1, description='Built-in tool names, "pkg.module:func", or {function, name, description, '
        "parameters} mappings.")
    max_steps: int = Field(5, ge=1, description="Model calls that may use tools; then one last call must answer.")
    mode: Literal["auto", "native", "text"] = Field(
        "auto", description="native: the backend's function calling; text: ReAct prompt; auto: native when the "
        "backend supports tools.")
    max_tokens: int = Field(192, ge=1, description="Generation limit per model call.")
    system: str | None = Field(None, description="Overrides prompt.system for this row.")


@dataclass
class _Run:
    """One example's loop: its conversation so far, its trace, and how it ended."""

    messages: list[Message]
    trace: Trace = field(default_factory=Trace)
    scratchpad: str = "Thought:"  # text protocol: the assistant turn the model keeps continuing
    steps: int = 0  # model calls made
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    final: str | None = None
    failed: bool = False
    stopped: str = ""

    @property
    def done(self) -> bool:
        return self.failed or self.final is not None


class React:
    def __init__(self, options: ReactOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx
        self.tools: dict[str, Tool] = {}
        for spec in options.tools:
            tool = load_tool(spec)
            if tool.name in self.tools:
                raise TaskfitError(f"two tools are named {tool.name!r}; give one a `name:`", field="strategies.tools")
            self.tools[tool.name] = tool

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        mode = self.options.mode
        native = getattr(lm.backend, "supports_tools", False)
        if mode == "auto":
            mode = "native" if native else "text"
        elif mode == "native" and not native:  # the backend would drop the tools and the model never see them
            raise TaskfitError(f"strategy option mode: native needs a backend with tool calling; {lm.model_id} "
                               "has none (use mode: text)", field="strategies.mode")
        runs = [_Run(self._messages(ex, mode)) for ex in examples]
        step = self._native_step if mode == "native" else self._text_step
        for _ in range(self.options.max_steps):
            active = [r for r in runs if not r.done]
            if not active:
                break
            step(active, lm, last=False)
        active = [r for r in runs if not r.done]
        if active:  # the step limit: one more call, which must answer
            step(active, lm, last=True)
        return [self._prediction(r, mode) for r in runs]

    # -- prompts ---------------------------------------------------------------------------------
    def _messages(self, ex: Example, mode: str) -> list[Message]:
        parts = self.ctx.parts
        system = self.options.system or parts.system
        system = system and render_row(parts, system, ex, "prompt.system")
        if mode == "text":
            first = next(iter(self.tools.values()))
            protocol = TEXT_PROTOCOL.format(tools="\n\n".join(_describe(t) for t in self.tools.values()),
                                            first=first.name, example=json.dumps(dict.fromkeys(first.required, "...")))
            system = f"{system}\n\n{protocol}" if system else protocol
        out: list[Message] = [{"role": "system", "content": system}] if system else []
        # the task's response_prefix is not used: the reply is the tool loop's scratchpad, not the bare answer
        out.append({"role": "user", "content": user_turn(parts, ex)})
        return out

    # -- text protocol ---------------------------------------------------------------------------
    def _text_step(self, active: list[_Run], lm: LM, last: bool) -> None:
        if last:
            for r in active:
                r.scratchpad = f"{r.scratchpad.rstrip()} {LIMIT_NOTE}"
        requests = [GenerateRequest((*r.messages, {"role": "assistant", "content": r.scratchpad}),
                                    max_tokens=self.options.max_tokens, stop=FINAL_STOP if last else STOP)
                    for r in active]
        for r, res in self._generate(active, lm, requests, last):
            text = res.texts[0] if res.texts else ""
            if last:  # cut here too: not every server applies every stop sequence
                r.final, r.stopped = _first_paragraph(_cut(text, FINAL_STOP)), "step_limit"
                continue
            action = parse_action(text, self.tools)
            if action.final is not None:
                r.final, r.stopped = action.final, "answer"
                continue
            if action.tool is None:  # neither an action nor "Final Answer:": the reply is all there is
                r.final, r.stopped = text.strip(), "no_action"
                continue
            result = self._run_tool(r, action.tool, action.arguments, action.error)
            r.scratchpad = f"{r.scratchpad}{text[:action.end].rstrip()}\nObservation: {result.output}\nThought:"

    # -- native protocol -------------------------------------------------------------------------
    def _native_step(self, active: list[_Run], lm: LM, last: bool) -> None:
        if last:
            for r in active:
                r.messages.append({"role": "user", "content": NATIVE_LIMIT_NOTE})
        schemas = tuple(t.schema() for t in self.tools.values())
        requests = [GenerateRequest(tuple(r.messages), max_tokens=self.options.max_tokens, tools=schemas)
                    for r in active]
        for r, res in self._generate(active, lm, requests, last):
            text = res.texts[0] if res.texts else ""
            if last or not res.tool_calls:  # at the limit a further tool call is ignored: its text is the answer
                r.final, r.stopped = text, "step_limit" if last else "answer"
                continue
            self._answer_tool_calls(r, text, res)

    def _answer_tool_calls(self, r: _Run, text: str, res: GenerateResult) -> None:
        r.messages.append({"role": "assistant", "content": text, "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                          else json.dumps(c["arguments"])}} for c in res.tool_calls]})
        for call in res.tool_calls:
            args, error = call["arguments"], None
            if isinstance(args, str):  # the server passed on arguments that are not JSON
                args, error = _arguments(args, self.tools.get(call["name"]))
            result = self._run_tool(r, call["name"], args, error)
            r.messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.output})

    # -- shared ----------------------------------------------------------------------------------
    def _generate(self, active: list[_Run], lm: LM, requests: list[GenerateRequest],
                  last: bool) -> list[tuple[_Run, GenerateResult]]:
        """One model step for every running example; a failed call ends that example's loop."""
        results = lm.generate(requests, [r.trace for r in active], step="final" if last else "generate")
        answered = []
        for r, res in zip(active, results, strict=True):
            r.steps += 1
            if res.error:
                r.failed, r.stopped = True, "error"
            else:
                answered.append((r, res))
        return answered

    def _run_tool(self, r: _Run, name: str, arguments: dict[str, Any] | None, error: str | None) -> ToolResult:
        """Run one tool call and record it in the example's trace as its own entry."""
        start = time.perf_counter()
        tool = self.tools.get(name)
        if tool is None:
            msg = f"unknown tool {name!r}; the tools are {', '.join(self.tools)}"
            result = ToolResult(output=f"Error: {msg}", error=msg)
        elif error is not None or arguments is None:
            msg = error or "no arguments"
            result = ToolResult(output=f"Error: {msg}", error=msg)
        else:
            result = execute(tool, arguments)
        if len(result.output) > MAX_OBSERVATION_CHARS:
            result = ToolResult(output=result.output[:MAX_OBSERVATION_CHARS] + " ...(truncated)", error=result.error)
        latency_ms = (time.perf_counter() - start) * 1000
        r.trace.calls.append({
            # n = 0: a tool run is not a model call, so the leaderboard's call count leaves it out
            "step": "tool", "kind": "tool", "messages": [], "params": {"n": 0, "name": name, "arguments": arguments},
            "output": result.output, "tokens_in": 0, "tokens_out": 0, "latency_ms": latency_ms, "cached": False,
            "error": result.error,
        })
        r.tool_calls.append({"name": name, "arguments": arguments, "result": result.output})
        return result

    def _prediction(self, r: _Run, mode: str) -> Prediction:
        details = {"mode": mode, "steps": r.steps, "tool_calls": r.tool_calls, "stopped": r.stopped}
        return to_prediction(None if r.failed else r.final, self.ctx, r.trace, details=details)


@dataclass(frozen=True)
class Action:
    """What one text-protocol reply asks for: a tool call, or the final answer."""

    tool: str | None = None
    arguments: dict[str, Any] | None = None
    error: str | None = None  # the arguments could not be read; shown to the model as the observation
    final: str | None = None
    end: int = 0  # where the action ends in the reply: anything after it is the model running ahead


_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(.*)$", re.M | re.I)
_INPUT = re.compile(r"^[ \t]*Action[ \t]*Input[ \t]*:[ \t]*", re.M | re.I)
_FINAL = re.compile(r"Final[ \t]*Answer[ \t]*:[ \t]*", re.I)
_NEXT = re.compile(r"^[ \t]*(?:Thought|Action|Observation|Final[ \t]*Answer|Question)[ \t]*:", re.M | re.I)
_CALL = re.compile(r"^([\w.-]+)\s*\((.*)\)$", re.S)


def parse_action(text: str, tools: dict[str, Tool] | None = None) -> Action:
    """Read a ReAct reply. A "Final Answer:" before any "Action:" ends the loop; else the first action is
    taken, its input read as JSON (or a bare value for a tool with one required argument)."""
    final = _FINAL.search(text)
    action = _ACTION.search(text)
    if final and (not action or final.start() < action.start()):
        rest = text[final.end():]
        nxt = _NEXT.search(rest)
        return Action(final=_first_paragraph(rest[:nxt.start()] if nxt else rest))
    if not action:
        return Action()
    name = action.group(1).strip().strip("`'\"[]*").rstrip(".").strip()
    inline = None
    call = _CALL.match(name)
    if call:  # "Action: calculator(2 + 2)"
        name, inline = call.group(1), call.group(2)
    after = text[action.end():]
    given = _INPUT.search(after)
    if given and not _NEXT.search(after[:given.start()]):
        raw = after[given.end():]
        nxt = _NEXT.search(raw)
        raw_input = raw[:_input_extent(raw[:nxt.start()] if nxt else raw)]
        end = action.end() + given.end() + len(raw_input)
    else:
        raw_input, end = inline or "", action.end()
    tool = (tools or {}).get(name) or next((t for n, t in (tools or {}).items() if n.lower() == name.lower()), None)
    if tool is None and not raw_input and tools and len(tools) == 1:
        # small models often write the tool's input where its name belongs ("Action: 3 * 60"); with a single
        # tool that takes one required argument, read it as that call
        only = next(iter(tools.values()))
        if len(only.required) == 1:
            tool, raw_input = only, name
    args, error = _arguments(raw_input, tool)
    return Action(tool=tool.name if tool else name, arguments=args, error=error, end=end)


def _input_extent(block: str) -> int:
    """How much of the text after "Action Input:" is the input: a JSON object (and a closing code fence),
    else its first line; what follows is the model running ahead."""
    brace = block.find("{")
    if brace != -1:
        try:
            _, end = json.JSONDecoder().raw_decode(block, brace)
        except ValueError:
            pass
        else:
            line_end = block.find("\n", end)
            end = len(block) if line_end == -1 else line_end
            fence = re.match(r"\s*```[^\n]*", block[end:])
            return end + (fence.end() if fence else 0)
        blank = block.find("\n\n", brace)
        return len(block) if blank == -1 else blank
    first = re.match(r"\s*[^\n]*", block)
    return first.end() if first else len(block)


def _arguments(raw: str, tool: Tool | None) -> tuple[dict[str, Any] | None, str | None]:
    """Tool arguments from an Action Input: a JSON object, a Python-style dict, or one bare value."""
    s = raw.strip()
    s = re.sub(r"^```(?:json)?\s*|\s*```$", "", s).strip().strip("`").strip()
    value: Any = None
    brace = s.find("{")
    if brace != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(s[brace:])
        except ValueError:
            try:
                # {'location': 'Paris'}; round-tripped so the arguments stay JSON for the trace
                value = json.loads(json.dumps(ast.literal_eval(s[brace:s.rfind("}") + 1]), default=str))
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                value = None
    if isinstance(value, dict):
        return value, None
    if s.startswith("{"):
        return None, "Action Input is not a valid JSON object"
    if not s:
        return ({}, None) if tool and not tool.required else (None, "Action Input is empty")
    try:
        scalar = json.loads(s)
    except ValueError:
        scalar = s.strip("'\"")
    params = list((tool.parameters.get("properties") or {}) if tool else [])
    single = tool.required if tool and len(tool.required) == 1 else params if len(params) == 1 else []
    if len(single) == 1 and not isinstance(scalar, (dict, list)):
        return {single[0]: scalar}, None
    keys = ", ".join(params) if params else "its parameters"
    return None, f"Action Input must be a JSON object with keys {keys}"


def _cut(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the first stop sequence."""
    return text[:min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))]


def _first_paragraph(text: str) -> str:
    """A text-protocol final answer: small models tend to run on after it with a blank line and commentary."""
    return text.strip().split("\n\n", 1)[0].strip()


def _describe(tool: Tool) -> str:
    """A tool as the text protocol shows it: name, description, JSON parameters."""
    return f"{tool.name}: {tool.description}\n  parameters: {json.dumps(tool.parameters.get('properties', {}))}"


Options = ReactOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> React:
    return React(parse_options(ReactOptions, spec), ctx)
