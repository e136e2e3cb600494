"""`taskfit serve` under hostile input: linear-time redaction, a responsive event loop, the Host check,
conversation ids, bounded reads and retention of what the server stores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from test_serve import _cli, _free_port, _pipeline, _qa_task, running

from taskfit.backends import GenerateRequest
from taskfit.backends.scripted import ScriptedBackend
from taskfit.serve.batching import BatchingBackend
from taskfit.serve.config import MemoryConfig, RetentionConfig
from taskfit.serve.log import RequestLog
from taskfit.serve.memory import ConversationMemory
from taskfit.serve.retention import Retention
from taskfit.serve.server import TIMEOUT_REPLY

ADVERSARIAL = {  # each about 1 MB: plain text, one long word, '@'-heavy and dot-heavy text, digit runs
    "words": "('lorem ipsum dolor sit amet ' * 40_000)[:1_000_000]",
    "one_word": "'a' * 1_000_000",
    "at_signs": "'a@' * 500_000",
    "at_dots": "'x@a.x' * 200_000",
    "long_domain": "'a@' + 'b.' * 500_000 + '1'",
    "digits": "'1' * 1_000_000",
    "phone_like": "'+1 ' * 330_000",
}


def test_default_redaction_is_linear_on_adversarial_input():
    # in a child process so a super-linear pattern fails by timeout instead of hanging the suite; the
    # bound is generous (linear patterns take well under a second per megabyte)
    script = textwrap.dedent(f"""
        from taskfit.serve.config import VettingRules
        from taskfit.serve.vetting import build_vetter
        vetter = build_vetter(VettingRules(), "input")
        for name, make in {ADVERSARIAL!r}.items():
            out = vetter.vet(eval(make))
            print(name, len(out), flush=True)
        print(vetter.vet("write to jane.doe+x@mail.example.com or +44 20 7946 0958"))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"redaction did not finish within 90 s; finished: {e.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "write to [EMAIL] or [PHONE]"


def test_healthz_answers_while_a_large_request_is_vetted(tmp_path, taskfit_home, workspace):
    port = _free_port()
    proc = _cli(["--task", str(_qa_task(tmp_path, serve={"max_body_bytes": 2_000_000})), "--port", str(port)],
                taskfit_home)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        big = "QUJD" * 225_000  # one 900 kB word (a pasted blob): quadratic redaction took minutes on this
        result: dict[str, int] = {}

        def send() -> None:
            body = {"model": "qa", "messages": [{"role": "user", "content": big}]}
            result["status"] = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).status_code

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(0.3)  # the big request is on its way in
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        sender.join(timeout=120)
        assert result.get("status") == 200
        (row,) = RequestLog(workspace.engine).recent()
        assert len(row["input"]) < 10_100 and row["input"].endswith("(900000 characters)")  # the log stays small
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_client_that_leaves_mid_body_is_logged_not_an_error(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path))) as url:
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                         "application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ".encode())
            time.sleep(0.3)
        deadline = time.time() + 10
        while not RequestLog(workspace.engine).recent() and time.time() < deadline:
            time.sleep(0.05)
    (row,) = RequestLog(workspace.engine).recent()
    assert row["outcome"] == "client_disconnected" and row["status"] == 400


def test_a_stalled_body_gets_408(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path, serve={"body_timeout_s": 1}))) as url:
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
            conn.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                         "application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ".encode())
            answer = b""
            try:
                while part := conn.recv(4096):  # the server closes the connection after its answer
                    answer += part
            except TimeoutError:
                pytest.fail("a client that stops sending its body holds the connection open")
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer


def test_a_client_sending_headers_slowly_is_cut_off_while_others_are_served(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path, serve={"header_timeout_s": 0.5}))) as url:
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            started, answer = time.monotonic(), b""
            try:
                while time.monotonic() - started < 8:  # one more header byte every 0.2 s: never a whole request
                    slow.sendall(b"a")
                    assert httpx.post(f"{url}/chat/completions", json=CHAT, timeout=5).status_code == 200
                    slow.settimeout(0.2)
                    try:
                        part = slow.recv(4096)
                    except TimeoutError:
                        continue
                    answer += part
                    if not part:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we were still sending
            held = time.monotonic() - started
        assert held < 2, f"a client sending its headers slowly held the connection for {held:.1f} s"
        assert answer in (b"", TIMEOUT_REPLY) or answer.startswith(b"HTTP/1.1 408")
        # a kept-alive connection idle for longer than the bound between two requests is still served
        body = json.dumps(CHAT).encode()
        request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            for pause in (0.8, 0):
                kept.sendall(request)
                reply = b""
                while b'"taskfit"' not in reply:
                    reply += kept.recv(4096)
                assert reply.startswith(b"HTTP/1.1 200")
                time.sleep(pause)


# -- Host and Origin checks (DNS rebinding) -------------------------------------------------------------

CHAT = {"model": "qa", "messages": [{"role": "user", "content": "hi"}]}


def test_loopback_mode_refuses_foreign_host_and_origin(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path))) as url:
        port = url.split(":")[2].split("/")[0]
        assert httpx.post(f"{url}/chat/completions", json=CHAT).status_code == 200
        for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert httpx.post(f"{url}/chat/completions", json=CHAT, headers={"Host": host}).status_code == 200
        rebound = httpx.post(f"{url}/chat/completions", json=CHAT, headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403 and "evil.example" in rebound.json()["error"]["message"]
        cross = httpx.post(f"{url}/chat/completions", json=CHAT, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert httpx.get(f"{url}/models", headers={"Host": "evil.example"}).status_code == 403


def test_allowed_hosts_and_token_mode(tmp_path, workspace):
    pipeline = _pipeline(workspace, _qa_task(tmp_path))
    with running(pipeline, allowed_hosts=["serve.lan"]) as url:
        assert httpx.post(f"{url}/chat/completions", json=CHAT, headers={"Host": "serve.lan:8000"}).status_code == 200
        assert httpx.post(f"{url}/chat/completions", json=CHAT, headers={"Host": "evil.example"}).status_code == 403
    with running(pipeline, token="tok") as url:  # the token is the guard: any Host name the operator uses
        ok = httpx.post(f"{url}/chat/completions", json=CHAT,
                        headers={"Host": "serve.example.com", "Authorization": "Bearer tok"})
        assert ok.status_code == 200


# -- conversation ids, bounded history, retention, batching ---------------------------------------------

def test_conversation_id_header_obeys_the_body_rules(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path))) as url:
        for bad in ("x" * 201, "a b", "../../etc", "ü"):
            res = httpx.post(f"{url}/chat/completions", json=CHAT,
                             headers={"X-Conversation-Id": bad.encode()})
            assert res.status_code == 400 and "conversation" in res.json()["error"]["message"].lower(), bad
            res = httpx.post(f"{url}/chat/completions", json={**CHAT, "conversation_id": bad})
            assert res.status_code == 400, bad
        ok = httpx.post(f"{url}/chat/completions", json=CHAT, headers={"X-Conversation-Id": "user-7.chat_2:x"})
        assert ok.status_code == 200 and ok.headers["x-conversation-id"] == "user-7.chat_2:x"


def test_history_reads_a_bounded_amount(workspace):
    memory = ConversationMemory(workspace.engine, MemoryConfig(max_turns=2, max_tokens=1000))
    for i in range(30):  # 30 turns of ~300 kB: the oldest ones can never be shown again
        memory.append("c", [{"role": "user", "content": f"{i} " + "x" * 300_000}, {"role": "assistant", "content": "ok"}])
    memory.append("c", [{"role": "user", "content": "last question"}, {"role": "assistant", "content": "last reply"}])
    tracemalloc.start()
    try:
        history = memory.history("c")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert history == [{"role": "user", "content": "last question"}, {"role": "assistant", "content": "last reply"}]
    assert peak < 2_000_000, f"history() held {peak} bytes to return two short messages"
    with workspace.engine.connect() as conn:  # a message over the whole budget is stored cut
        assert conn.execute(text("SELECT MAX(length(content)) FROM conversations")).scalar_one() == 4001


def test_memory_keeps_only_what_history_can_show(workspace):
    memory = ConversationMemory(workspace.engine, MemoryConfig(max_turns=3, max_tokens=1000))
    for i in range(10):
        memory.append("c", [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}])
    with workspace.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT content FROM conversations ORDER BY seq"))]
    assert stored == ["q7", "a7", "q8", "a8", "q9", "a9"]
    assert [m["content"] for m in memory.history("c")] == stored


def _insert(workspace, table: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    with workspace.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"), rows)


def _count(workspace, table: str, where: str = "1=1") -> int:
    with workspace.engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {where}")).scalar_one()


def test_retention_prunes_conversations_requests_and_cache(workspace):
    now = 1_000_000_000.0
    day = 86_400.0
    _insert(workspace, "conversations", [{"conversation_id": c, "seq": s, "role": "user", "content": "x", "created": t + s}
                              for c, t in (("old", now - 10 * day), ("new", now - day), ("busy", now))
                              for s in range(3)])
    req = {"task_name": "qa", "strategy": "s", "model": "m", "status": 200, "outcome": "ok", "stream": 0,
           "latency_ms": 1.0, "queue_ms": 0.0, "tokens_in": 0, "tokens_out": 0, "calls": 1, "cache_hits": 0,
           "tool_calls": 0}
    _insert(workspace, "requests", [{**req, "id": f"r{i}", "created": now - i * day} for i in range(40)]
            + [{**req, "id": "other-task", "task_name": "other", "created": now - 100 * day}])
    _insert(workspace, "calls", [{"key": f"k{i}-{m}", "model_id": m, "kind": "generate", "request": "{}", "response": "{}",
                       "created": now - i * day} for i in range(40) for m in ("served", "evaluated")])
    config = RetentionConfig(conversation_days=7, conversation_messages=4, request_log_days=30,
                             request_log_rows=20, cache_days=10, cache_entries=5)
    pruned = Retention(workspace.engine, config, task_name="qa", model_id="served", clock=lambda: now).prune()
    # "old" is idle past 7 days; of the rest the newest 4 messages stay
    assert _count(workspace, "conversations", "conversation_id = 'old'") == 0
    assert _count(workspace, "conversations") == 4 and _count(workspace, "conversations", "conversation_id = 'busy'") == 3
    assert _count(workspace, "requests", "task_name = 'qa'") == 20 and _count(workspace, "requests", "id = 'r0'") == 1
    assert _count(workspace, "requests", "task_name = 'other'") == 1  # another task's log is not this server's to prune
    assert _count(workspace, "calls", "model_id = 'served'") == 5 and _count(workspace, "calls", "model_id = 'evaluated'") == 40
    assert pruned == {"conversations": 5, "requests": 20, "calls": 35}


def test_retention_is_configured_in_the_task_file(tmp_path, workspace):
    from taskfit.errors import TaskfitError

    pipeline = _pipeline(workspace, _qa_task(tmp_path, serve={"retention": {"request_log_days": 2, "cache_entries": 10}}))
    assert pipeline.retention.config.request_log_days == 2 and pipeline.retention.config.cache_entries == 10
    assert pipeline.retention.config.conversation_days > 0  # defaults for the rest
    with pytest.raises(TaskfitError, match="serve.retention.request_log_days"):
        _pipeline(workspace, _qa_task(tmp_path, serve={"retention": {"request_log_days": -1}}))


def test_batch_statistics_do_not_grow_forever():
    backend = BatchingBackend(ScriptedBackend({"default": "ok"}), window_s=0)
    try:
        for _ in range(3000):
            backend.generate([GenerateRequest(({"role": "user", "content": "hi"},))])
    finally:
        backend.close()
    assert 0 < len(backend.batches) <= 1000 and sum(backend.batches) == len(backend.batches)


# -- bounded errors and an aggregated log summary ------------------------------------------------------------

def test_thousands_of_invalid_messages_get_a_short_error_and_log_row(tmp_path, workspace):
    bad = json.dumps({"model": "qa", "messages": [{"role": "x", "content": ""}] * 38_000}, separators=(",", ":"))
    assert 900_000 < len(bad) < 1_000_000  # every one of 38,000 messages has a bad role
    with running(_pipeline(workspace, _qa_task(tmp_path))) as url:
        res = httpx.post(f"{url}/chat/completions", content=bad, headers={"content-type": "application/json"},
                         timeout=60)
    assert res.status_code == 400 and len(res.content) < 4_000, len(res.content)
    message = res.json()["error"]["message"]
    assert message.startswith("invalid request: 38000 problems, the first 5: messages.0.role:")
    (row,) = RequestLog(workspace.engine).recent()
    assert row["outcome"] == "bad_request" and len(row["error"]) < 4_000


def test_the_request_log_keeps_any_error_short(workspace):
    log = RequestLog(workspace.engine)
    log.add({"id": "r", "created": 1.0, "task_name": "qa", "strategy": "s", "model": "m", "status": 502,
             "outcome": "model_error", "latency_ms": 1.0, "error": "e" * 3_000_000, "input": "i" * 50_000})
    (row,) = log.recent()
    assert len(row["error"]) < 2_100 and row["error"].endswith("(3000000 characters)")
    assert len(row["input"]) < 10_100


def test_the_log_summary_is_aggregated_without_loading_rows(store_workspace):
    import random

    workspace = store_workspace  # SQLite, and PostgreSQL where the test server is set
    rng = random.Random(0)
    req = {"strategy": "s", "model": "m", "status": 200, "stream": 0, "queue_ms": 0.0, "calls": 1,
           "cache_hits": 0, "tool_calls": 0, "input": "x" * 5_000}  # 3000 rows of 5 kB: 15 MB if loaded
    rows = [{**req, "id": f"r{i}", "created": float(i), "task_name": "qa" if i % 4 else "other",
             "outcome": rng.choice(["ok", "ok", "ok", "refused", "bad_request"]),
             "latency_ms": rng.uniform(1, 1000), "tokens_in": i % 7, "tokens_out": i % 5} for i in range(3000)]
    _insert(workspace, "requests", rows)
    log = RequestLog(workspace.engine)
    tracemalloc.start()
    try:
        summary = log.summary(task_name="qa")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"summary() held {peak} bytes"
    mine = [r for r in rows if r["task_name"] == "qa"]
    ok = sorted(r["latency_ms"] for r in mine if r["outcome"] == "ok")
    outcomes: dict[str, int] = {}
    for r in mine:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    assert summary == {"requests": len(mine), "outcomes": outcomes, "latency_p50_ms": ok[int(0.5 * len(ok))],
                       "latency_p99_ms": ok[int(0.99 * len(ok))], "tokens_in": sum(r["tokens_in"] for r in mine),
                       "tokens_out": sum(r["tokens_out"] for r in mine)}
    assert log.summary()["requests"] == 3000
    assert RequestLog(workspace.engine).summary(task_name="none")["latency_p50_ms"] is None


# -- what a request must be ---------------------------------------------------------------------------------

def test_nan_sampling_values_and_a_non_json_body_are_refused(tmp_path, workspace):
    with running(_pipeline(workspace, _qa_task(tmp_path))) as url:
        for field, value in (("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "NaN"),
                             ("temperature", "3")):
            body = json.dumps(CHAT)[:-1] + f', "{field}": {value}}}'  # NaN and Infinity: not JSON, but parsed
            res = httpx.post(f"{url}/chat/completions", content=body, headers={"content-type": "application/json"})
            assert res.status_code == 400, (field, value)
            assert field in res.json()["error"]["message"] and res.json()["error"]["type"] == "invalid_request_error"
        ok = httpx.post(f"{url}/chat/completions", json={**CHAT, "temperature": 0.7, "top_p": 1})
        assert ok.status_code == 200
        for kind in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"content-type": kind} if kind else {}
            res = httpx.post(f"{url}/chat/completions", content=json.dumps(CHAT), headers=headers)
            assert res.status_code == 415, kind
            error = res.json()["error"]
            assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
        charset = httpx.post(f"{url}/chat/completions", content=json.dumps(CHAT),
                             headers={"content-type": "application/json; charset=utf-8"})
        assert charset.status_code == 200
