"""The react / tools strategy: the text protocol on a scripted model, native tool calls over loopback HTTP,
the step limit, and a run of the real bundled model."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskfit.backends import GenerateRequest
from taskfit.backends.openai import _parse
from taskfit.backends.scripted import ScriptedBackend
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows
from taskfit.lm import LM
from taskfit.runner import BackendPool, evaluate
from taskfit.strategies.react import parse_action
from taskfit.study import prepare, select_arms
from taskfit.tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [{"id": "q1", "question": "What is (12+3)*4/5?", "answer": "12"},
             {"id": "q2", "question": "What is 6*7?", "answer": "42"}]


class ReplyPool(BackendPool):
    """Every model is one ScriptedBackend answering through ``reply``."""

    def __init__(self, reply: Callable[[GenerateRequest], str]):
        super().__init__()
        self.backend = ScriptedBackend({}, reply=reply)

    def get(self, spec):
        return self.backend


def _task(tmp_path: Path, strategy: dict[str, Any], *, models: list | None = None, data: str | None = None,
          **overrides: Any) -> Path:
    if data is None:
        data = "data.jsonl"
        (tmp_path / data).write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS))
    config = {"name": "maths", "data": {"test": data}, "inputs": ["question"], "output": "answer",
              "metrics": ["numeric"], "prompt": {"instruction": "Answer the question.",
                                                 "input_template": "Question: {{ question }}"},
              "parse": {"type": "text"}, "strategies": [strategy],
              "models": models or [{"backend": "scripted", "name": "fake"}], **overrides}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _evaluate(workspace, path: Path, pool: BackendPool | None = None):
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=task.config.limit,
                    workspace=workspace, pool=pool)
    return workspace.runs, runs


def _expression(req: GenerateRequest) -> str:
    user = next(m["content"] for m in req.messages if m["role"] == "user")
    return user.split("What is ", 1)[1].rstrip("?")


def _calculate_then_answer(req: GenerateRequest) -> str:
    """A model that follows the text protocol: one calculator action, then the observation as the answer."""
    scratchpad = req.messages[-1]["content"]
    assert req.messages[-1]["role"] == "assistant" and req.stop == ("Observation:",)
    assert "calculator: Evaluate an arithmetic expression" in req.messages[0]["content"]
    if "Observation:" not in scratchpad:
        return (f" I should use the calculator.\nAction: calculator\n"
                f"Action Input: {{\"expression\": \"{_expression(req)}\"}}\n")
    observation = scratchpad.rsplit("Observation:", 1)[1].split("\n")[0].strip()
    return f" I now know the final answer.\nFinal Answer: {observation}"


def test_text_protocol_calls_the_tool_then_answers(tmp_path, monkeypatch, workspace):
    batches: list[int] = []
    real = LM.generate

    def counting(self, requests, traces, step="generate"):
        batches.append(len(requests))
        return real(self, requests, traces, step)

    monkeypatch.setattr(LM, "generate", counting)
    store, runs = _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": ["calculator"]}),
                            ReplyPool(_calculate_then_answer))
    assert batches == [2, 2]  # one model call per step for all examples still running
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    assert preds["q1"].answer == "12" and preds["q2"].answer == "42"
    calls = preds["q1"].trace["calls"]
    assert [c["step"] for c in calls] == ["generate", "tool", "generate"]
    tool = calls[1]
    assert tool["kind"] == "tool" and tool["output"] == "12" and tool["error"] is None
    assert tool["params"] == {"n": 0, "name": "calculator", "arguments": {"expression": "(12+3)*4/5"}}
    assert "Observation: 12\nThought:" in calls[2]["messages"][-1]["content"]
    details = preds["q1"].trace["details"]
    assert details["steps"] == 2 and details["mode"] == "text"
    assert details["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "(12+3)*4/5"}, "result": "12"}]
    assert preds["q1"].calls == 2  # the tool run is not a model call
    (row,) = rows(workspace, runs)
    assert row.score == 1.0 and row.calls_per_query == 2


def test_step_limit_forces_a_final_answer(tmp_path, workspace):
    def reply(req: GenerateRequest) -> str:
        scratchpad = req.messages[-1]["content"]
        if scratchpad.endswith("Final Answer:"):
            return " 7\nThought: more"
        return ' Again.\nAction: calculator\nAction Input: {"expression": "1+1"}\nObservation: made up'

    pool = ReplyPool(reply)
    store, runs = _evaluate(workspace, _task(tmp_path, {"name": "react", "tools": ["calculator"], "max_steps": 2},
                                  limit=1), pool)
    (pred,) = store.predictions(runs[0].id)
    assert [c["step"] for c in pred.trace["calls"]] == ["generate", "tool", "generate", "tool", "final"]
    assert len(pool.backend.requests) == 3
    assert pool.backend.requests[-1].stop == ("Observation:", "\nThought:", "\nAction:")
    assert pred.answer == "7" and pred.calls == 3
    details = pred.trace["details"]
    assert details["stopped"] == "step_limit" and details["steps"] == 3 and len(details["tool_calls"]) == 2
    # the model's invented observation is cut off; the tool's real one takes its place
    last_prompt = pool.backend.requests[-1].messages[-1]["content"]
    assert "made up" not in last_prompt and last_prompt.count("Observation: 2\n") == 2


def test_unknown_tool_and_bad_input_become_observations(tmp_path, workspace):
    def reply(req: GenerateRequest) -> str:
        scratchpad = req.messages[-1]["content"]
        n = scratchpad.count("Observation:")
        if n == 0:
            return " Action: abacus\nAction Input: 1+1\n"
        if n == 1:
            return " Action: calculator\nAction Input: 1+\n"
        return " Final Answer: 2"

    store, runs = _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": ["calculator"]}, limit=1), ReplyPool(reply))
    (pred,) = store.predictions(runs[0].id)
    tools = [c for c in pred.trace["calls"] if c["kind"] == "tool"]
    assert tools[0]["output"].startswith("Error: unknown tool 'abacus'") and tools[0]["error"]
    assert "not an arithmetic expression" in tools[1]["output"]
    assert pred.answer == "2" and pred.failed == 0


def test_native_mode_needs_a_backend_with_tool_calling(tmp_path, workspace):
    with pytest.raises(TaskfitError, match="mode: native needs a backend with tool calling"):
        _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": ["calculator"], "mode": "native"}),
                  ReplyPool(lambda req: "Final Answer: 1"))


def test_bad_options_and_tools_fail_before_any_call(tmp_path, workspace):
    pool = ReplyPool(lambda req: "Final Answer: 1")
    with pytest.raises(TaskfitError, match="tools"):
        _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": []}), pool)
    with pytest.raises(TaskfitError, match="unknown tool 'abacus'"):
        _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": ["abacus"]}), pool)
    with pytest.raises(TaskfitError, match="two tools are named 'calculator'"):
        _evaluate(workspace, _task(tmp_path, {"name": "tools", "tools": ["calculator", "taskfit.tools:calculator"]}), pool)
    assert pool.backend.requests == []


def test_example_task_files_load():
    for name, n in [("task.yaml", 10), ("calculator.yaml", 30)]:
        task, ds = prepare(ROOT / "examples/tools" / name)
        assert len(ds.split("test")[:task.config.limit]) == n
        assert [s.label() for s in task.config.strategies] == ["zero_shot", "tools"]


def test_parse_action_is_tolerant():
    tools = {"calculator": load_tool("calculator"), "get_current_weather": load_tool("get_current_weather")}
    a = parse_action(' x\nAction: `Calculator`\nAction Input: ```json\n{"expression": "2+2"}\n```\nThought: hm', tools)
    assert (a.tool, a.arguments, a.error) == ("calculator", {"expression": "2+2"}, None)
    a = parse_action("Action: get_current_weather\nAction Input: Paris", tools)
    assert a.arguments == {"location": "Paris"}
    a = parse_action("Action: get_current_weather\nAction Input: {'location': 'Rome', 'unit': 'fahrenheit'}", tools)
    assert a.arguments == {"location": "Rome", "unit": "fahrenheit"}
    assert parse_action("Action: calculator(3*4)", tools).arguments == {"expression": "3*4"}
    assert parse_action("Thought: easy.\nFinal Answer: 12\nAction: calculator", tools).final == "12"
    assert parse_action("Final Answer: 12.\n\nThis is a classic example, worth 3 points.", tools).final == "12."
    assert parse_action("just 12", tools).tool is None


# -- native tool calls against a loopback OpenAI-style server ----------------------------------------

class ToolServer:
    """An OpenAI-style chat server that asks for the weather, then answers from the tool message it gets."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.always_call = False  # never answer: keep asking for the tool
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
        if tool_msgs and not self.always_call:
            temperature = json.loads(tool_msgs[-1]["content"])["temperature"]
            message = {"role": "assistant", "content": f"It is {temperature} degrees there."}
        else:
            args = json.dumps({"location": "Paris", "unit": "fahrenheit"})
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{len(tool_msgs)}", "type": "function",
                 "function": {"name": "get_current_weather", "arguments": args}}]}
        return {"id": "cmpl", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        fake: ToolServer = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        with fake.lock:
            fake.payloads.append(body)
        data = json.dumps(fake.answer(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)



@pytest.fixture
def server() -> Iterator[ToolServer]:
    from conftest import serving

    fake = ToolServer()
    with serving(fake.httpd):
        yield fake


def _weather_task(tmp_path: Path, server: ToolServer, **strategy: Any) -> Path:
    return _task(tmp_path, {"name": "tools", "tools": ["get_current_weather"], **strategy},
                 data=str(ROOT / "examples/tools/data/test.jsonl"), limit=1,
                 models=[{"backend": "openai", "base_url": server.base_url, "model": "m", "max_retries": 0}])


def test_native_tool_calls_over_http(tmp_path, server, workspace):
    store, runs = _evaluate(workspace, _weather_task(tmp_path, server))
    first, second = server.payloads
    assert first["tools"] == [load_tool("get_current_weather").schema()]
    assert [m["role"] for m in first["messages"]] == ["user"]
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"] == [{"id": "call_0", "type": "function", "function": {
        "name": "get_current_weather", "arguments": json.dumps({"location": "Paris", "unit": "fahrenheit"})}}]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_0"
    assert json.loads(tool["content"])["temperature"] == 68
    (pred,) = store.predictions(runs[0].id)
    assert pred.output == "It is 68 degrees there." and pred.score == 1.0
    assert [c["step"] for c in pred.trace["calls"]] == ["generate", "tool", "generate"]
    assert pred.trace["details"]["mode"] == "native" and pred.calls == pred.trace["details"]["steps"] == 2


def test_native_step_limit(tmp_path, server, workspace):
    server.always_call = True
    store, runs = _evaluate(workspace, _weather_task(tmp_path, server, max_steps=2))
    assert len(server.payloads) == 3
    assert server.payloads[-1]["messages"][-1]["role"] == "user"  # "give your final answer now"
    (pred,) = store.predictions(runs[0].id)
    assert [c["step"] for c in pred.trace["calls"]] == ["generate", "tool", "generate", "tool", "final"]
    assert pred.trace["details"]["stopped"] == "step_limit" and pred.parse_failed == 1


def test_openai_reply_tool_calls_are_parsed():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}},
        {"type": "function", "function": {"name": "calculator", "arguments": "1+1"}}]}
    res = _parse({"choices": [{"index": 0, "message": message}]})
    assert res.texts == [""]
    assert res.tool_calls == [{"id": "a", "name": "calculator", "arguments": {"expression": "1+1"}},
                              {"id": "call_1", "name": "calculator", "arguments": "1+1"}]


@pytest.mark.slow
def test_bundled_model_runs_the_tool_loop(tmp_path, workspace):
    path = _task(tmp_path, {"name": "tools", "tools": ["get_current_weather"], "max_steps": 2, "max_tokens": 64},
                 data=str(ROOT / "examples/tools/data/test.jsonl"), limit=2, models=["bundled"])
    store, runs = _evaluate(workspace, path)
    assert runs[0].status == "done"
    preds = store.predictions(runs[0].id)
    assert len(preds) == 2
    for p in preds:
        assert p.failed == 0 and p.trace["calls"][0]["step"] == "generate"
        assert 1 <= p.trace["details"]["steps"] == p.calls <= 3


def test_action_written_as_the_input_of_the_only_tool() -> None:
    from taskfit.strategies.react import parse_action
    from taskfit.tools import load_tool

    calc = load_tool("calculator")
    action = parse_action(" I need to add.\nAction: 3 * 60\n", {calc.name: calc})
    assert action.tool == "calculator" and action.arguments == {"expression": "3 * 60"}
    weather = load_tool("get_current_weather")
    two = parse_action("Action: 3 * 60\n", {calc.name: calc, weather.name: weather})
    assert two.tool == "3 * 60"  # with several tools an unknown name stays an error for the model to read
