"""`taskfit serve` driven by the official openai client over loopback: chat, streaming, tools, memory,
vetting, auth and bad requests on the scripted model, and one run of the real bundled model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
import yaml

from taskfit.backends import GenerateRequest, GenerateResult
from taskfit.backends.scripted import ScriptedBackend
from taskfit.runner import BackendPool
from taskfit.serve.app import create_app
from taskfit.serve.batching import BatchingBackend
from taskfit.serve.log import RequestLog
from taskfit.serve.memory import trim
from taskfit.serve.pipeline import Pipeline, build_pipeline
from taskfit.serve.server import uvicorn_config
from taskfit.study import run_study

ROOT = Path(__file__).resolve().parents[1]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current temperature in a city, in Celsius.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(pipeline: Pipeline, token: str | None = None, **kw: Any) -> Iterator[str]:
    """Serve ``pipeline`` with uvicorn on a free loopback port in a thread; yields the /v1 base URL."""
    app = create_app(pipeline, token=token, log=RequestLog(pipeline.memory.eng), **kw)
    port = _free_port()
    server = uvicorn.Server(uvicorn_config(app, pipeline.config, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


class OnePool(BackendPool):
    """Hands out one given backend, so a test can look at the requests the model received."""

    def __init__(self, backend: Any):
        super().__init__()
        self.backend = backend

    def get(self, spec):
        return self.backend


def _qa_task(tmp_path: Path, **overrides: Any) -> Path:
    """A generative question-answering task on the scripted model."""
    (tmp_path / "qa.jsonl").write_text(json.dumps({"id": "q1", "question": "Who wrote Hamlet?",
                                                   "answer": "Shakespeare"}) + "\n")
    config = {"name": "qa", "data": {"test": "qa.jsonl"}, "inputs": ["question"], "output": "answer",
              "metrics": ["exact_match"], "prompt": {"instruction": "Answer the question.",
                                                     "input_template": "Question: {{ question }}"},
              "parse": {"type": "text"}, "strategies": ["zero_shot"],
              "models": [{"backend": "scripted", "name": "fake", "script": {"default": "I do not know."}}],
              **overrides}
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _pipeline(workspace, path: Path, pool: BackendPool | None = None, **kw: Any) -> Pipeline:
    return build_pipeline(workspace, task_path=str(path), pool=pool, **kw)


# -- chat and streaming ------------------------------------------------------------------------------

def test_chat_label_scoring_and_models(make_task, workspace):
    pipeline = _pipeline(workspace, make_task(), strategy="zero_shot")
    with running(pipeline) as url:
        client = _client(url)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        res = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a great film"}])
        assert res.choices[0].message.content == "positive"
        assert res.choices[0].finish_reason == "stop"
        assert res.usage.prompt_tokens > 0
        res = client.chat.completions.create(model="tiny", messages=[
            {"role": "system", "content": "ignored: the served prompt is the evaluated one"},
            {"role": "user", "content": [{"type": "text", "text": "terrible acting"}]}])
        assert res.choices[0].message.content == "negative"
        assert httpx.get(url.removesuffix("/v1") + "/healthz").json()["status"] == "ok"


def test_streaming_matches_the_plain_reply(tmp_path, workspace):
    path = _qa_task(tmp_path, models=[{"backend": "scripted", "script": {
        "replies": {"Hamlet": "William Shakespeare wrote it around 1600."}}}])
    with running(_pipeline(workspace, path)) as url:
        client = _client(url)
        msgs = [{"role": "user", "content": "Who wrote Hamlet?"}]
        plain = client.chat.completions.create(model="qa", messages=msgs).choices[0].message.content
        stream = client.chat.completions.create(model="qa", messages=msgs, stream=True,
                                                stream_options={"include_usage": True})
        pieces, reasons, usage = [], [], None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                reasons.append(choice.finish_reason)
    assert plain == "William Shakespeare wrote it around 1600"  # the parsed answer (reply: answer)
    assert "".join(pieces) == plain and len([p for p in pieces if p]) == 6  # word by word
    assert reasons[-1] == "stop" and usage is not None and usage.completion_tokens > 0


# -- tools ---------------------------------------------------------------------------------------

def test_tool_call_round_trip_text_protocol(tmp_path, workspace):
    """A local-style model (no native function calling): the ReAct reply becomes an OpenAI tool call."""
    path = _qa_task(tmp_path, models=[{"backend": "scripted", "script": {"replies": {
        "Observation: 21": "Thought: I now know the final answer.\nFinal Answer: It is 21 degrees in Paris.",
        "Paris": 'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}'}}}])
    with running(_pipeline(workspace, path)) as url:
        client = _client(url)
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "How warm is it in Paris?"}]
        first = client.chat.completions.create(model="qa", messages=msgs, tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        msgs += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "21"}]
        second = client.chat.completions.create(model="qa", messages=msgs, tools=[WEATHER])
        assert second.choices[0].finish_reason == "stop"
        assert second.choices[0].message.content == "It is 21 degrees in Paris."
        # streamed tool calls arrive as tool_calls deltas
        deltas = [c.choices[0].delta for c in client.chat.completions.create(
            model="qa", messages=msgs[:1], tools=[WEATHER], stream=True) if c.choices]
        streamed = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert streamed[0].function.name == "get_weather"
        # tool_choice none: the tools are ignored and the strategy answers
        plain = client.chat.completions.create(model="qa", messages=msgs[:1], tools=[WEATHER], tool_choice="none")
        assert plain.choices[0].message.tool_calls is None


class NativeTools(ScriptedBackend):
    """A backend with native function calling: it calls get_weather until it sees the tool's result."""

    supports_tools = True

    def __init__(self):
        super().__init__({}, name="native")

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        out = []
        for r in requests:
            self.requests.append(r)
            result = next((m["content"] for m in r.messages if m["role"] == "tool"), None)
            if result is None and r.tools:
                out.append(GenerateResult(texts=[""], tokens_in=5, tool_calls=[
                    {"id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}}]))
            else:
                out.append(GenerateResult(texts=[f"It is {result} degrees."], tokens_in=5, tokens_out=4))
        return out


def test_tool_call_round_trip_native(tmp_path, workspace):
    backend = NativeTools()
    with running(_pipeline(workspace, _qa_task(tmp_path), pool=OnePool(backend))) as url:
        client = _client(url)
        msgs: list[dict[str, Any]] = [{"role": "user", "content": "How cold is Oslo?"}]
        first = client.chat.completions.create(model="qa", messages=msgs, tools=[WEATHER], tool_choice="auto")
        (call,) = first.choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        assert backend.requests[0].tools[0]["function"]["name"] == "get_weather"
        msgs += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "-3"}]
        second = client.chat.completions.create(model="qa", messages=msgs, tools=[WEATHER])
        assert second.choices[0].message.content == "It is -3 degrees."


def test_task_tools_run_on_the_server(tmp_path, workspace):
    """A `tools` strategy row: its own Python tools run server-side within the request."""
    path = _qa_task(tmp_path, strategies=[{"name": "tools", "tools": ["calculator"], "mode": "text"}],
                    models=[{"backend": "scripted", "script": {"replies": {
                        "Observation: 42": "Thought: done.\nFinal Answer: 42",
                        "6*7": 'Thought: compute.\nAction: calculator\nAction Input: {"expression": "6*7"}'}}}])
    with running(_pipeline(workspace, path)) as url:
        res = _client(url).chat.completions.create(model="qa", messages=[{"role": "user", "content": "What is 6*7?"}])
    assert res.choices[0].message.content == "42"
    assert res.model_extra["taskfit"]["calls"] == 2


# -- memory --------------------------------------------------------------------------------------

def test_follow_up_sees_earlier_turns(tmp_path, workspace):
    script = {"replies": {"Hello Ada": "Your name is Ada", "My name is Ada": "Hello Ada!"},
              "default": "I do not know your name"}
    path = _qa_task(tmp_path, models=[{"backend": "scripted", "script": script}])
    with running(_pipeline(workspace, path)) as url:
        client = _client(url)
        hi = [{"role": "user", "content": "My name is Ada."}]
        ask = [{"role": "user", "content": "What is my name?"}]
        assert client.chat.completions.create(model="qa", messages=hi, extra_headers={
            "X-Conversation-Id": "c1"}).choices[0].message.content == "Hello Ada!"
        follow = client.chat.completions.with_raw_response.create(model="qa", messages=ask,
                                                                  extra_body={"conversation_id": "c1"})
        assert follow.parse().choices[0].message.content == "Your name is Ada"
        assert follow.headers["x-conversation-id"] == "c1"
        # another conversation, and no conversation at all, do not see it
        other = client.chat.completions.create(model="qa", messages=ask, extra_body={"conversation_id": "c2"})
        assert other.choices[0].message.content == "I do not know your name"
        assert client.chat.completions.create(model="qa", messages=ask).choices[0].message.content == \
            "I do not know your name"
        # earlier turns sent with the request work the same without memory
        inline = client.chat.completions.create(model="qa", messages=[*hi, {"role": "assistant", "content": "Hello Ada!"},
                                                                      *ask])
        assert inline.choices[0].message.content == "Your name is Ada"


def test_memory_size_policy():
    turns = []
    for i in range(5):
        turns += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "x" * 40}]
    assert [m["content"] for m in trim(turns, 2, 10_000)] == ["question 3", "x" * 40, "question 4", "x" * 40]
    assert len(trim(turns, 10, 30)) == 4  # each turn costs 3 + 10 estimated tokens: two fit in 30
    assert trim(turns, 0, 10_000) == [] and trim(turns, 10, 5) == []


# -- vetting -------------------------------------------------------------------------------------

def test_vetting_redacts_refuses_and_filters(tmp_path, workspace):
    backend = ScriptedBackend({"replies": {"secret plan": "The plan is: call 555-123-4567.",
                                           "forbidden": "Here is how to make a bomb."},
                               "default": "noted"}, name="v")
    serve = {"vetting": {"input": {"max_chars": 200, "blocked": [r"\bpassword\b"]},
                         "output": {"blocked": ["bomb"]}, "refusal": "Sorry, no."}}
    path = _qa_task(tmp_path, serve=serve)
    with running(_pipeline(workspace, path, pool=OnePool(backend))) as url:
        client = _client(url)
        res = client.chat.completions.create(model="qa", messages=[
            {"role": "user", "content": "Mail jane.doe@example.com or ring +44 20 7946 0958 about it"}],
            extra_body={"conversation_id": "v1"})
        assert res.choices[0].message.content == "noted"
        prompt = json.dumps(backend.requests[-1].messages)
        assert "[EMAIL]" in prompt and "[PHONE]" in prompt and "jane.doe" not in prompt and "7946" not in prompt
        reply = client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "the secret plan"}])
        assert reply.choices[0].message.content == "The plan is: call [PHONE]"
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "my password is x"}])
        assert e.value.status_code == 400 and e.value.code == "input_blocked" and "blocked pattern" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "y" * 201}])
        assert e.value.code == "input_too_long" and "limit is 200" in e.value.message
        filtered = client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "forbidden"}])
        assert filtered.choices[0].finish_reason == "content_filter"
        assert filtered.choices[0].message.content == "Sorry, no."
    log = RequestLog(workspace.engine)
    rows = log.recent()
    stored = json.dumps(rows) + json.dumps(pipeline_memory(log))
    assert "jane.doe" not in stored and "7946" not in stored and "[EMAIL]" in stored
    assert sorted(r["outcome"] for r in rows) == ["ok", "ok", "output_refused", "refused", "refused"]


def pipeline_memory(log: RequestLog) -> list:
    from sqlalchemy import text

    with log.eng.connect() as conn:
        return [list(r) for r in conn.execute(text("SELECT role, content FROM conversations"))]


def test_serve_section_is_validated(tmp_path, workspace):
    from taskfit.errors import TaskfitError

    path = _qa_task(tmp_path, serve={"memory": {"max_turn": 3}, "vetting": {"input": {"redact": ["ssn"]}}})
    with pytest.raises(TaskfitError) as e:
        _pipeline(workspace, path)
    assert "serve.memory.max_turn: Extra inputs are not permitted" in str(e.value)
    assert "unknown redaction ['ssn']" in str(e.value) and str(path) in str(e.value)


def test_bad_vetting_regex_is_a_clear_error(tmp_path, workspace):
    from taskfit.errors import TaskfitError

    path = _qa_task(tmp_path, serve={"vetting": {"input": {"blocked": ["(unclosed"]}}})
    with pytest.raises(TaskfitError, match=r"serve.vetting.input.blocked\[0\]: invalid regular expression"):
        _pipeline(workspace, path)


# -- bad requests, auth, errors -----------------------------------------------------------------

def test_bad_requests_get_clear_4xx(tmp_path, workspace):
    pipeline = _pipeline(workspace, _qa_task(tmp_path, serve={"max_body_bytes": 4096}))
    with running(pipeline) as url:
        client = _client(url)
        with pytest.raises(openai.BadRequestError, match="messages: Field required"):
            client.post("/chat/completions", body={"model": "qa"}, cast_to=httpx.Response)
        with pytest.raises(openai.BadRequestError, match="messages"):
            client.chat.completions.create(model="qa", messages="hello")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match=r"messages.0.content"):
            client.chat.completions.create(model="qa", messages=[{"role": "user", "content": 5}])  # type: ignore
        with pytest.raises(openai.BadRequestError, match="no user message"):
            client.chat.completions.create(model="qa", messages=[{"role": "system", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="stream"):
            client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "x"}],
                                           extra_body={"stream": "yes"})
        with pytest.raises(openai.NotFoundError, match="serves 'qa'"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError, match="limit of 4096 bytes|limit is 4096") as e:
            client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "z" * 5000}])
        assert e.value.status_code == 413
        raw = httpx.post(f"{url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert raw.status_code == 400 and "Invalid JSON" in raw.json()["error"]["message"]
        assert httpx.get(f"{url}/nowhere").status_code == 404


def test_errors_never_leak_internals(tmp_path, workspace):
    pipeline = _pipeline(workspace, _qa_task(tmp_path))

    def broken(chat):
        raise RuntimeError("secret internal detail")

    pipeline.answer = broken  # type: ignore[method-assign]
    with running(pipeline) as url:
        raw = httpx.post(f"{url}/chat/completions", json={"model": "qa", "messages": [{"role": "user", "content": "x"}]})
    assert raw.status_code == 500
    assert raw.json() == {"error": {"message": "internal server error", "type": "server_error", "param": None,
                                    "code": None}}
    (row,) = RequestLog(workspace.engine).recent()
    assert row["status"] == 500 and "secret internal detail" in row["error"]


def test_failed_model_call_is_502(tmp_path, workspace):
    path = _qa_task(tmp_path, models=[{"backend": "scripted", "script": {"fail_on": "BOOM"}}])
    with running(_pipeline(workspace, path)) as url:
        with pytest.raises(openai.InternalServerError) as e:
            _client(url).chat.completions.create(model="qa", messages=[{"role": "user", "content": "BOOM"}])
    assert e.value.status_code == 502 and e.value.code == "model_error"


def test_token_required_when_set(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path)), token="s3cret") as url:
        with pytest.raises(openai.AuthenticationError) as e:
            _client(url, key="wrong").chat.completions.create(model="qa", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 401 and "bearer token" in e.value.message
        with pytest.raises(openai.AuthenticationError):
            _client(url, key="wrong").models.list()
        assert httpx.post(f"{url}/chat/completions", json={}).status_code == 401  # no header at all
        ok = _client(url, key="s3cret").chat.completions.create(model="qa", messages=[{"role": "user", "content": "x"}])
        assert ok.choices[0].message.content == "I do not know"


def _cli(args: list[str], home: Path, **kw: Any) -> subprocess.Popen:
    env = {**os.environ, "TASKFIT_HOME": str(home)}
    env.pop("TASKFIT_SERVE_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "taskfit.cli", "serve", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_cli_refuses_public_address_without_token(tmp_path, taskfit_home):
    proc = _cli(["--task", str(_qa_task(tmp_path)), "--host", "0.0.0.0"], taskfit_home)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0 without a token" in err
    assert "Traceback" not in err


def test_cli_public_address_with_token(tmp_path, taskfit_home):
    port = _free_port()
    proc = _cli(["--task", str(_qa_task(tmp_path)), "--host", "0.0.0.0", "--port", str(port), "--token", "tok"],
                taskfit_home)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": "qa", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 401
        ok = _client(f"{url}/v1", key="tok").chat.completions.create(**body)
        assert ok.choices[0].message.content == "I do not know"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_cli_needs_an_arm(make_task, taskfit_home):
    proc = _cli(["--task", str(make_task())], taskfit_home)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "2 strategies x 1 models; choose one arm" in err


# -- a stored run, batching, the log ----------------------------------------------------------

def test_serves_the_arm_of_a_stored_run(make_task, workspace):
    path = make_task()
    _, table = run_study(path, workspace=workspace, strategy_names=["few_shot_balanced"])
    pipeline = build_pipeline(workspace, run_id=table[0].run_id)
    assert pipeline.arm.strategy.label() == "few_shot_balanced" and pipeline.arm.model.label() == "fake"
    with running(pipeline) as url:
        (info,) = _client(url).models.list().data
        assert info.model_extra["strategy"] == "few_shot_balanced"
        res = _client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "so great"}])
    assert res.choices[0].message.content == "positive"


def test_concurrent_requests_are_batched_and_logged(tmp_path, workspace):
    script = {"replies": {f"question {i}?": f"reply{i}" for i in range(12)}, "delay_s": 0.02}
    path = _qa_task(tmp_path, models=[{"backend": "scripted", "script": script}],
                    serve={"batch_window_ms": 100, "cache": False})
    pipeline = _pipeline(workspace, path)
    assert isinstance(pipeline.backend, BatchingBackend)
    answers: dict[int, str] = {}
    with running(pipeline) as url:
        client = _client(url)

        def ask(i: int) -> None:
            res = client.chat.completions.create(model="qa", messages=[{"role": "user", "content": f"question {i}?"}])
            answers[i] = res.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == {i: f"reply{i}" for i in range(12)}
    assert sum(pipeline.backend.batches) == 12 and max(pipeline.backend.batches) > 1
    rows = RequestLog(workspace.engine).recent()
    assert len(rows) == 12 and all(r["outcome"] == "ok" and r["latency_ms"] > 0 and r["tokens_in"] > 0 for r in rows)
    summary = RequestLog(workspace.engine).summary()
    assert summary["requests"] == 12 and summary["latency_p50_ms"] <= summary["latency_p99_ms"]


# -- the real model ------------------------------------------------------------------------------

@pytest.mark.slow
def test_bundled_model_chat_stream_and_batching(workspace):
    pipeline = build_pipeline(workspace, task_path=str(ROOT / "examples/sst2/task.yaml"), strategy="zero_shot",
                              model="bundled")
    reviews = {"a wonderful , moving and funny film": "positive", "a dull , tedious and ugly mess": "negative"}
    with running(pipeline) as url:
        client = _client(url, key="x")
        for text, label in reviews.items():
            res = client.chat.completions.create(model="sst2", messages=[{"role": "user", "content": text}])
            assert res.choices[0].message.content == label
        stream = client.chat.completions.create(model="sst2", messages=[{"role": "user", "content": "a joy"}],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) in ("positive", "negative")
        out: list[str] = []
        threads = [threading.Thread(target=lambda t=t: out.append(client.chat.completions.create(
            model="sst2", messages=[{"role": "user", "content": t + " indeed"}]).choices[0].message.content))
            for t in list(reviews) * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(out) == 8 and set(out) <= {"positive", "negative"}
    assert max(pipeline.backend.batches) > 1
