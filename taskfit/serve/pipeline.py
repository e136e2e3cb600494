"""One chat request through the served arm: the request as a task example, the strategy's prediction.

Mapping a chat onto the task: the last user message fills the task's input field (a task with several
input fields takes a JSON object of them). Earlier user/assistant turns (stored memory first, then the
request's own) go into every model call as chat turns before the current user message. Client system
messages are ignored: the served configuration's own prompt is what was evaluated. Requests with `tools`
run a tool turn (tool_turn.py) instead of the strategy's single answer.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskfit.backends import Backend, Message
from taskfit.dataset import Dataset, Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.plugins import stored_model, stored_strategy
from taskfit.prompts import prompt_parts
from taskfit.runner import Arm, BackendPool, resolve_mode
from taskfit.serve.batching import BatchingBackend
from taskfit.serve.memory import ConversationMemory
from taskfit.serve.retention import Retention
from taskfit.serve.tool_turn import run_tool_turn
from taskfit.serve.vetting import Refused, build_vetter
from taskfit.strategies import StrategyContext, strategies
from taskfit.study import prepare, select_arms
from taskfit.taskfile import Task

if TYPE_CHECKING:
    from taskfit.workspace import Workspace


class BadRequest(ValueError):
    """A request that cannot be mapped onto the task; the message says what to send instead."""


@dataclass
class ChatInput:
    """A chat request in task terms, already vetted."""

    fields: dict[str, Any]  # the example's input fields
    user_text: str  # the current user message, as stored in memory and the log
    history: list[Message]  # earlier turns: stored memory, then the request's own
    exchange: list[Message] = field(default_factory=list)  # tool calls and results after the user message
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    conversation_id: str | None = None


@dataclass
class ChatOutput:
    content: str | None
    tool_calls: list[dict[str, Any]]  # {"id", "name", "arguments": JSON text}
    finish_reason: str  # stop | tool_calls | content_filter
    trace: Trace
    failed: bool = False

    @property
    def usage(self) -> dict[str, int]:
        tin, tout = int(self.trace.total("tokens_in")), int(self.trace.total("tokens_out"))
        return {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}


class _NoCache:
    """Stands in for the call cache when `serve.cache` is off."""

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        return {}

    def put_many(self, rows: list) -> None:
        pass


class ConversationLM:
    """The LM as a strategy sees it, with the conversation's earlier turns before the current user message
    of every call (after the system prompt), so cache keys include the history too."""

    def __init__(self, lm: LM, history: list[Message]):
        self.lm, self.history = lm, history
        self.backend, self.cache, self.model_id = lm.backend, lm.cache, lm.model_id

    @property
    def can_score(self) -> bool:
        return self.lm.can_score

    def generate(self, requests: list, traces: list[Trace], step: str = "generate") -> list:
        return self.lm.generate([self._with_history(r) for r in requests], traces, step)

    def score(self, requests: list, traces: list[Trace], step: str = "score") -> list:
        return self.lm.score([self._with_history(r) for r in requests], traces, step)

    def _with_history(self, request: Any) -> Any:
        if not self.history:
            return request
        msgs = list(request.messages)
        start = next((i for i, m in enumerate(msgs) if m["role"] != "system"), len(msgs))
        return dataclasses.replace(request, messages=tuple(msgs[:start] + self.history + msgs[start:]))


class Pipeline:
    """The served arm, built once: backend (batched when local), strategy, vetting, memory."""

    def __init__(self, task: Task, dataset: Dataset, arm: Arm, workspace: Workspace, pool: BackendPool | None = None):
        c = task.config
        self.task, self.arm, self.config = task, arm, c.serve
        backend: Backend = (pool or BackendPool(workspace)).get(arm.model)
        self.mode = resolve_mode(task, backend)
        if backend.local:  # one model, many requests: batch their calls
            backend = BatchingBackend(backend, max_batch=self.config.max_batch,
                                      window_s=self.config.batch_window_ms / 1000)
        self.backend = backend
        self.cache = workspace.cache if self.config.cache else _NoCache()
        self.ctx = StrategyContext(task=task, parts=prompt_parts(task), train=dataset.splits.get("train", []),
                                   mode=self.mode, seed=c.data.seed, workspace=workspace)
        self.strategy = strategies.get(arm.strategy.name)(arm.strategy, self.ctx)
        self.vet_input = build_vetter(self.config.vetting.input, "input")
        self.vet_output = build_vetter(self.config.vetting.output, "output")
        self.memory = ConversationMemory(workspace.engine, self.config.memory)
        self.retention = Retention(workspace.engine, self.config.retention, task_name=c.name, model_id=backend.model_id)
        self.model_name = self.config.model_name or c.name

    # -- request -> task -----------------------------------------------------------------------
    def chat_input(self, messages: list[Message], tools: list[dict[str, Any]] | None = None,
                   tool_choice: Any = None, conversation_id: str | None = None) -> ChatInput:
        """Vet the request's text and map it onto the task; raises BadRequest or Refused."""
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None:
            raise BadRequest("messages: no user message; the last user message is the input to answer")
        exchange = messages[last + 1:]
        for m in exchange:
            if not (m["role"] == "tool" or (m["role"] == "assistant" and m.get("tool_calls"))):
                raise BadRequest("messages: only tool calls and tool results may follow the last user message")
        user_text = self.vet_input.vet(_text(messages[last]))
        history: list[Message] = []
        if conversation_id and self.config.memory.enabled:
            history += self.memory.history(conversation_id)
        for m in messages[:last]:  # earlier turns sent with the request; tool traffic and system prompts left out
            if m["role"] in ("user", "assistant") and _text(m):
                history.append({"role": m["role"], "content": self.vet_input.vet(_text(m))})
        exchange = [{**m, "content": self.vet_input.vet(_text(m))} if m["role"] == "tool" else m for m in exchange]
        names = {t["function"]["name"] for t in tools or []}
        forced = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
        if forced is not None and forced not in names:
            raise BadRequest(f"tool_choice names {forced!r}, which is not one of the request's tools")
        if tool_choice == "required" and not names:
            raise BadRequest("tool_choice is 'required' but the request has no tools")
        return ChatInput(fields=self._fields(user_text), user_text=user_text, history=history, exchange=exchange,
                         tools=list(tools or []), tool_choice=tool_choice, conversation_id=conversation_id)

    def _fields(self, text: str) -> dict[str, Any]:
        inputs = self.task.config.inputs
        obj = None
        if text.lstrip().startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
        if isinstance(obj, dict) and all(k in obj for k in inputs):
            return {k: obj[k] for k in inputs}
        if len(inputs) == 1:
            return {inputs[0]: text}
        raise BadRequest(f"this task takes {len(inputs)} input fields: send the user message as a JSON object "
                         f"with the keys {', '.join(inputs)}")

    # -- answer ----------------------------------------------------------------------------------
    def answer(self, chat: ChatInput) -> ChatOutput:
        """Run the served arm on one chat input (thread-safe: concurrent calls batch in the backend)."""
        ex = Example(id=uuid.uuid4().hex[:12], fields=chat.fields, target="")
        lm = ConversationLM(LM(self.backend, self.cache), chat.history)  # type: ignore[arg-type]
        if chat.tools and chat.tool_choice != "none":
            turn = run_tool_turn(ex, chat.exchange, chat.tools, chat.tool_choice, getattr(self.strategy, "tools", {}),
                                 lm, self.ctx, max_steps=self.config.max_tool_steps,
                                 max_tokens=max(self.task.config.max_tokens, 128))
            if turn.failed:
                return ChatOutput(None, [], "stop", turn.trace, failed=True)
            if turn.client_calls:
                return ChatOutput(None, turn.client_calls, "tool_calls", turn.trace)
            text, trace = turn.final or "", turn.trace
        else:
            pred = self.strategy.predict([ex], lm)[0]  # type: ignore[arg-type]
            if pred.failed:
                return ChatOutput(None, [], "stop", pred.trace, failed=True)
            use_answer = self.config.reply == "answer" and pred.answer is not None
            text, trace = (pred.answer if use_answer else pred.output) or "", pred.trace
        try:
            content, reason = self.vet_output.vet(text), "stop"
        except Refused:
            content, reason = self.config.vetting.refusal, "content_filter"
        if chat.conversation_id and self.config.memory.enabled:
            self.memory.append(chat.conversation_id, [{"role": "user", "content": chat.user_text},
                                                      {"role": "assistant", "content": content}])
        return ChatOutput(content, [], reason, trace)


def _text(message: Message) -> str:
    """A message's text: a string, or the text parts of a content list."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BadRequest(f"messages: only text content is supported (got a {part.get('type')!r} part)"
                             if isinstance(part, dict) else "messages: content parts must be objects")
        parts.append(str(part.get("text") or ""))
    return "\n".join(parts)


def build_pipeline(workspace: Workspace, *, run_id: str | None = None, task_path: str | None = None,
                   strategy: str | None = None, model: str | None = None,
                   pool: BackendPool | None = None) -> Pipeline:
    """The pipeline for a stored run's arm (``run_id``) or for one strategy x model of a task file."""
    if run_id:
        run = workspace.runs.get(run_id)
        if run is None:
            raise TaskfitError(f"no run (or more than one) matches {run_id!r}; see `taskfit runs`")
        path = task_path or run.task_path
        try:
            task, dataset = prepare(path)
        except TaskfitError as e:
            raise TaskfitError(f"run {run.id}: cannot load its task file ({e}); pass --task") from None
        arm = Arm(stored_strategy(run.config["strategy"]), stored_model(run.config["model"]))
        return Pipeline(task, dataset, arm, workspace, pool)
    if not task_path:
        raise TaskfitError("give --run RUN, or --task TASK (with --strategy and --model when it has several)")
    task, dataset = prepare(task_path)
    arms = select_arms(task, [strategy] if strategy else None, [model] if model else None)
    if len(arms) != 1:
        labels = sorted({a.strategy.label() for a in arms}), sorted({a.model.label() for a in arms})
        raise TaskfitError(f"{task_path} has {len(labels[0])} strategies x {len(labels[1])} models; choose one arm "
                           f"with --strategy ({', '.join(labels[0])}) and --model ({', '.join(labels[1])})")
    return Pipeline(task, dataset, arms[0], workspace, pool)
