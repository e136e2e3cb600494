"""The openai backend against a real HTTP server on 127.0.0.1: ordering, retries, timeouts, concurrency."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from taskfit.backends import GenerateRequest, ScoreRequest
from taskfit.backends.openai import OpenAIBackend, create
from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec


class FakeServer:
    """An OpenAI-style chat server, scripted per test by setting its attributes before the calls."""

    def __init__(self) -> None:
        self.fail_first = 0  # answer the first K requests with fail_status
        self.fail_status = 500
        self.retry_after: str | None = None  # Retry-After header sent with those failures
        self.fail_marker: str | None = None  # a user message containing this always gets HTTP 500
        self.status: int | None = None  # answer every request with this status and an error body
        self.delay: Callable[[str], float] = lambda content: 0.0  # seconds to stall, by user message
        self.requests = 0
        self.payloads: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # wakes stalled handlers at teardown
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self, marker: str) -> int:
        """Requests seen whose last user message contains ``marker``."""
        with self.lock:
            return sum(marker in _last_user(p) for p in self.payloads)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and headers for one request, after any scripted stall."""
        with self.lock:
            self.requests += 1
            nth = self.requests
        content = _last_user(body)
        stall = self.delay(content)
        if stall:
            self.stopping.wait(stall)
        if self.status is not None:
            return self.status, {"error": {"message": f"bad request: scripted {self.status}"}}, {}
        if nth <= self.fail_first:
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return self.fail_status, {"error": {"message": f"scripted failure {nth}"}}, headers
        if self.fail_marker and self.fail_marker in content:
            return 500, {"error": {"message": "internal error: scripted"}}, {}
        reply = None if content == "<null>" else f"echo: {content}"
        n = body.get("n", 1)
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        return 200, {
            "id": f"cmpl-{nth}", "object": "chat.completion", "model": body["model"],
            # Choices listed out of order on purpose: the client must sort them by index.
            "choices": [{"index": i, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"} for i in reversed(range(n))],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n * len((reply or "").split()),
                      "total_tokens": 0},
        }, {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
            return
        body = json.loads(raw)
        with fake.lock:
            fake.payloads.append(body)
            fake.auth.append(self.headers.get("Authorization"))
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            status, payload, headers = fake.answer(body)
        finally:
            # Leave the in-flight count before replying, or the client's next request could overlap this one.
            with fake.lock:
                fake.in_flight -= 1
        self._send(status, payload, headers)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout) and closed the socket
            pass


def _last_user(body: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")


def _req(content: str, **kw: Any) -> GenerateRequest:
    messages = ({"role": "system", "content": "be brief"}, {"role": "user", "content": content})
    return GenerateRequest(messages=messages, **kw)



@pytest.fixture
def fake() -> Iterator[FakeServer]:
    from conftest import serving

    server = FakeServer()
    with serving(server.httpd, on_stop=server.stopping.set):  # stopping wakes stalled handlers
        yield server


@pytest.fixture
def make(fake: FakeServer) -> Iterator[Callable[..., OpenAIBackend]]:
    """Backend factory pointed at the fake server; fast backoff unless a test asks otherwise."""
    made: list[OpenAIBackend] = []

    def _make(backoff_s: float = 0.01, **spec: Any) -> OpenAIBackend:
        fields = {"backend": "openai", "base_url": fake.base_url, "model": "m", "timeout_s": 5.0, **spec}
        backend = OpenAIBackend(ModelSpec(**fields), backoff_s=backoff_s)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


def test_batch_comes_back_in_input_order_with_texts_and_tokens(fake: FakeServer, make) -> None:
    # Earlier requests stall longer, so the server finishes them out of order.
    fake.delay = lambda content: 0.005 * (10 - int(content.split()[-1]))
    backend = make(concurrency=4)
    results = backend.generate([_req(f"question number {i}") for i in range(10)])
    assert [r.texts for r in results] == [[f"echo: question number {i}"] for i in range(10)]
    for r in results:
        assert r.error is None
        assert r.tokens_in == 2 + 3  # system "be brief" + user "question number i"
        assert r.tokens_out == 4  # "echo: question number i"
        assert r.latency_ms > 0
    assert fake.requests == 10


def test_n_choices_and_null_content(fake: FakeServer, make) -> None:
    backend = make()
    many, empty = backend.generate([_req("pick one", n=3), _req("<null>")])
    assert many.texts == ["echo: pick one"] * 3
    assert many.tokens_out == 3 * 3
    assert empty.error is None and empty.texts == [""]


def test_request_body(fake: FakeServer, make) -> None:
    backend = make()
    backend.generate([_req("a", max_tokens=7, temperature=0.5, seed=3, stop=("\n\n", "END")), _req("b")])
    with_stop, without_stop = sorted(fake.payloads, key=_last_user)
    assert with_stop == {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                                    {"role": "user", "content": "a"}],
                         "max_tokens": 7, "temperature": 0.5, "n": 1, "seed": 3, "stop": ["\n\n", "END"]}
    assert "stop" not in without_stop
    assert fake.auth == [None, None]


def test_429_is_retried_honoring_retry_after(fake: FakeServer, make) -> None:
    fake.fail_first, fake.fail_status, fake.retry_after = 2, 429, "0"
    # A backoff this long would take seconds; Retry-After: 0 must win.
    backend = make(backoff_s=2.0, max_retries=3)
    (result,) = backend.generate([_req("hello")])
    assert result.error is None and result.texts == ["echo: hello"]
    assert fake.requests == 3
    assert result.latency_ms < 1500


def test_persistent_500_becomes_an_error_result(fake: FakeServer, make) -> None:
    fake.fail_marker = "boom"
    backend = make(max_retries=2)
    results = backend.generate([_req("ok 0"), _req("boom"), _req("ok 2")])
    assert results[0].texts == ["echo: ok 0"] and results[2].texts == ["echo: ok 2"]
    assert results[0].error is None and results[2].error is None
    bad = results[1]
    assert bad.texts == []
    assert "HTTP 500" in bad.error and "3 attempts" in bad.error and "scripted" in bad.error
    assert fake.count("boom") == 3


def test_slow_response_past_timeout_is_a_failure(fake: FakeServer, make) -> None:
    fake.delay = lambda content: 3.0 if content == "slow" else 0.0
    backend = make(timeout_s=0.3, max_retries=1)
    start = time.perf_counter()
    slow, fast = backend.generate([_req("slow"), _req("fast")])
    assert time.perf_counter() - start < 2.0
    assert slow.texts == [] and "timed out" in slow.error and "2 attempts" in slow.error
    assert slow.latency_ms >= 600  # two 0.3 s timeouts, retries included
    assert fast.error is None and fast.texts == ["echo: fast"]
    assert fake.count("slow") == 2


def test_400_is_not_retried(fake: FakeServer, make) -> None:
    fake.status = 400
    backend = make(max_retries=3)
    (result,) = backend.generate([_req("bad")])
    assert result.texts == []
    assert "HTTP 400" in result.error and "1 attempt" in result.error and "scripted 400" in result.error
    assert fake.requests == 1


def test_refused_connection_is_an_error_result(make) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    (result,) = backend.generate([_req("anyone?")])
    assert result.texts == [] and "connection failed" in result.error and "2 attempts" in result.error


def test_in_flight_never_exceeds_concurrency(fake: FakeServer, make) -> None:
    fake.delay = lambda content: 0.05
    backend = make(concurrency=3)
    results = backend.generate([_req(f"q {i}") for i in range(12)])
    assert all(r.error is None for r in results)
    assert 2 <= fake.max_in_flight <= 3  # parallel, but bounded


def test_api_key_is_sent_and_never_described(fake: FakeServer, make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFIT_TEST_KEY", "sk-secret")
    backend = make(api_key_env="TASKFIT_TEST_KEY")
    backend.generate([_req("hi")])
    assert fake.auth == ["Bearer sk-secret"]
    assert "sk-secret" not in json.dumps(backend.describe())
    assert backend.describe()["api_key_env"] == "TASKFIT_TEST_KEY"


def test_identity_and_no_scoring(fake: FakeServer) -> None:
    backend = create(ModelSpec(backend="openai", base_url=fake.base_url + "/", model="m"))
    try:
        assert backend.model_id == f"openai:{fake.base_url}:m"
        assert backend.supports_score is False and backend.local is False
        with pytest.raises(NotImplementedError, match="supports_score"):
            backend.score([ScoreRequest(messages=[{"role": "user", "content": "x"}], continuations=("a",))])
    finally:
        backend.close()


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(TaskfitError, match=r"models\[\]\.base_url"):
        create(ModelSpec(backend="openai", model="m"))


def test_missing_model_is_a_config_error() -> None:
    with pytest.raises(TaskfitError, match=r"models\[\]\.model"):
        create(ModelSpec(backend="openai", base_url="http://127.0.0.1:9/v1"))


def test_unset_api_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKFIT_TEST_MISSING_KEY", raising=False)
    with pytest.raises(TaskfitError, match="TASKFIT_TEST_MISSING_KEY"):
        create(ModelSpec(backend="openai", base_url="http://127.0.0.1:9/v1", model="m",
                         api_key_env="TASKFIT_TEST_MISSING_KEY"))


def test_eval_through_the_runner_over_http(fake: FakeServer, make_task, workspace) -> None:
    """A task file with `backend: openai` runs end to end: leaderboard rows, tokens, a failed call recorded."""
    from taskfit.leaderboard import rows
    from taskfit.runner import evaluate
    from taskfit.study import prepare, select_arms

    fake.fail_marker = "terrible acting"
    path = make_task(strategies=["zero_shot"], prompt={"instruction": "", "input_template": "{{ text }}",
                                                       "output_format": ""},
                     models=[{"backend": "openai", "base_url": fake.base_url, "model": "m", "max_retries": 1,
                              "price_in_per_1m": 1.0, "price_out_per_1m": 2.0}])
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    store = workspace.runs
    (row,) = rows(workspace, runs)
    assert row.n == 8 and row.failed == 1 and row.tokens_in > 0 and row.cost_per_1k > 0
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    assert preds["r3"].failed == 1 and "500" in preds["r3"].error
    # "echo: i loved every minute" names no label -> a parse failure, not a crash
    assert preds["r2"].parse_failed == 1
    assert runs[0].config["mode"] == "generate"  # chat servers cannot score labels
