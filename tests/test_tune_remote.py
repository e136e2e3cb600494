"""Remote fine-tuning: the official openai client against a loopback server implementing the files and
fine-tuning jobs endpoints with OpenAI's response shapes, and chat completions for the tuned model."""

from __future__ import annotations

import email.parser
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import serving

pytest.importorskip("openai")

KEY_ENV = "TASKFIT_TEST_PROVIDER_KEY"
POSITIVE = ("great", "loved", "warm")


class FakeProvider:
    """Jobs go validating_files -> queued -> running -> (while ``release`` is set) the planned outcome, one
    step per status poll; the fine-tuned model answers the sentiment task correctly."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.outcome = "succeeded"
        self.release = threading.Event()
        self.release.set()
        self.polls = 0
        self.chats: list[dict[str, Any]] = []
        self.base_url = ""

    def upload(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        fid = f"file-{len(self.files) + 1:04d}"
        self.files[fid] = {"content": content, "purpose": purpose}
        return {"id": fid, "object": "file", "bytes": len(content), "created_at": 1_700_000_000,
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
                "status_details": None}

    def create_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("training_file") not in self.files:
            return 400, {"error": {"message": "invalid training_file", "type": "invalid_request_error",
                                   "param": "training_file", "code": "invalid_file"}}
        jid = f"ftjob-{len(self.jobs) + 1:04d}"
        method = body.get("method") or {"type": "supervised"}
        self.jobs[jid] = {
            "id": jid, "object": "fine_tuning.job", "created_at": 1_700_000_100, "error": None,
            "fine_tuned_model": None, "finished_at": None,
            "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"},
            "model": body["model"], "organization_id": "org-test", "result_files": [],
            "seed": body.get("seed", 0), "status": "validating_files", "trained_tokens": None,
            "training_file": body["training_file"], "validation_file": None, "estimated_finish": None,
            "integrations": [], "metadata": body.get("metadata"), "method": method, "user_provided_suffix":
            body.get("suffix")}
        self.events[jid] = []
        self.event(jid, "info", "Validating training file", "message")
        return 200, self.jobs[jid]

    def event(self, jid: str, level: str, message: str, kind: str, data: dict | None = None) -> None:
        evs = self.events[jid]
        evs.append({"id": f"ftevent-{jid[-4:]}-{len(evs):03d}", "object": "fine_tuning.job.event",
                    "created_at": 1_700_000_100 + len(evs), "level": level, "message": message,
                    "data": data or {}, "type": kind})

    def advance(self, jid: str) -> None:
        job = self.jobs[jid]
        self.polls += 1
        if job["status"] == "validating_files":
            job["status"] = "queued"
            self.event(jid, "info", "Files validated, moving job to queued state", "message")
        elif job["status"] == "queued":
            job["status"] = "running"
            self.event(jid, "info", "Fine-tuning job started", "message")
        elif job["status"] == "running":
            step = sum(e["type"] == "metrics" for e in self.events[jid]) + 1
            self.event(jid, "info", f"Step {step}/3: training loss={1 / step:.2f}", "metrics",
                       {"step": step, "total_steps": 3, "train_loss": 1 / step})
            if step >= 3 and self.release.is_set():
                self.finish(jid)

    def finish(self, jid: str) -> None:
        job = self.jobs[jid]
        job["finished_at"] = job["created_at"] + 120
        job["hyperparameters"] = {"batch_size": 1, "learning_rate_multiplier": 1.8, "n_epochs": 3}
        if self.outcome == "succeeded":
            rows = self.files[job["training_file"]]["content"].decode().splitlines()
            job.update(status="succeeded", trained_tokens=100 * len(rows) * 3,
                       fine_tuned_model=f"ft:{job['model']}:org-test::{jid[-4:]}")
            self.event(jid, "info", "The job has successfully completed", "message")
        else:
            job.update(status="failed", error={"code": "invalid_training_file", "param": "training_file",
                                               "message": "The job failed due to an invalid training file."})
            self.event(jid, "error", "The job failed due to an invalid training file.", "message")

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not any(body["model"] == j["fine_tuned_model"] for j in self.jobs.values()):
            return 404, {"error": {"message": f"model {body['model']} not found", "type": "invalid_request_error",
                                   "param": "model", "code": "model_not_found"}}
        self.chats.append(body)
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        label = "positive" if any(w in user for w in POSITIVE) else "negative"
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_200, "model": body["model"],
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": label},
                                  "finish_reason": "stop", "logprobs": None}],
                     "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _job(self, jid: str) -> dict[str, Any] | None:
        return self.fake.jobs.get(jid)

    def do_POST(self) -> None:
        f = self.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlparse(self.path).path
        with f.lock:
            if path == "/v1/files":
                msg = email.parser.BytesParser().parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
                parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
                self._send(200, f.upload(parts["file"].get_filename(), parts["purpose"].get_payload(),
                                         parts["file"].get_payload(decode=True)))
            elif path == "/v1/fine_tuning/jobs":
                self._send(*f.create_job(json.loads(raw)))
            elif m := re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)/cancel", path):
                job = self._job(m[1])
                if job is None or job["status"] in ("succeeded", "failed", "cancelled"):
                    self._send(400 if job else 404, {"error": {"message": "cannot cancel", "type": "x",
                                                               "param": None, "code": None}})
                    return
                job["status"] = "cancelled"
                f.event(m[1], "info", "Fine-tuning job cancelled", "message")
                self._send(200, job)
            elif path == "/v1/chat/completions":
                self._send(*f.chat(json.loads(raw)))
            else:
                self._send(404, {"error": {"message": "no route", "type": "x", "param": None, "code": None}})

    def do_GET(self) -> None:
        f = self.fake
        url = urlparse(self.path)
        query = parse_qs(url.query)
        with f.lock:
            if url.path == "/v1/fine_tuning/jobs":
                want = {k[len("metadata["):-1]: v[0] for k, v in query.items() if k.startswith("metadata[")}
                data = [j for j in reversed(f.jobs.values())
                        if all((j["metadata"] or {}).get(k) == v for k, v in want.items())]
                self._send(200, {"object": "list", "data": data, "has_more": False})
            elif m := re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)/events", url.path):
                evs = list(reversed(f.events.get(m[1], [])))  # newest first, as the API returns them
                self._send(200, {"object": "list", "data": evs[: int(query.get("limit", ["20"])[0])],
                                 "has_more": False})
            elif m := re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)", url.path):
                if m[1] not in f.jobs:
                    self._send(404, {"error": {"message": "no such job", "type": "x", "param": None, "code": None}})
                    return
                f.advance(m[1])
                self._send(200, f.jobs[m[1]])
            else:
                self._send(404, {"error": {"message": "no route", "type": "x", "param": None, "code": None}})


@pytest.fixture
def provider(monkeypatch):
    fake = FakeProvider()
    handler = type("H", (_Handler,), {"fake": fake})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    fake.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    monkeypatch.setenv(KEY_ENV, "sk-test-not-a-real-key")
    with serving(httpd, on_stop=fake.release.set):
        yield fake


def _task(make_task, provider: FakeProvider) -> Path:
    return make_task(strategies=["zero_shot"], models=[{
        "backend": "openai", "base_url": provider.base_url, "model": "gpt-4o-mini-2024-07-18",
        "api_key_env": KEY_ENV, "price_in_per_1m": 0.3, "price_out_per_1m": 1.2}])


def _spec(provider: FakeProvider, **kw: Any):
    from taskfit.tuning.remote import RemoteSpec

    return RemoteSpec(model="gpt-4o-mini-2024-07-18", base_url=provider.base_url, api_key_env=KEY_ENV,
                      price_train_per_1m=3.0, poll_s=0.01, **kw)


def _cli(task: Path, home: Path, provider: FakeProvider, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TASKFIT_HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "taskfit.cli", "tune", str(task), "--provider", "openai",
         "--model", "gpt-4o-mini-2024-07-18", "--price-train-per-1m", "3", "--poll-s", "0.05", "--limit", "0",
         *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(cond, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_killed_command_reattaches_and_the_tuned_model_joins_the_leaderboard(provider, make_task, workspace):
    """Kill the command mid-job, run it again: one file, one job, and the ft: row on the leaderboard with
    its training cost; the uploaded rows carry the exact messages the evaluation sends."""
    from taskfit.leaderboard import rows

    task = _task(make_task, provider)
    provider.release.clear()  # the job keeps running until released
    first = _cli(task, workspace.root, provider)
    _wait(lambda: provider.jobs and provider.polls >= 4)  # created, stored, followed
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert [j["status"] for j in provider.jobs.values()] == ["running"]
    provider.release.set()
    second = _cli(task, workspace.root, provider)
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr
    assert "re-attaching to job ftjob-0001" in stderr
    assert len(provider.files) == 1 and len(provider.jobs) == 1
    job = provider.jobs["ftjob-0001"]
    assert job["method"] == {"type": "supervised", "supervised": {}} and job["metadata"]["taskfit_tune"]
    assert "step 3/3 loss 0.3333" in stderr

    (rec,) = workspace.tunes.list()
    assert rec.status == "done" and rec.result["trained_tokens"] == 100 * 8 * 3
    assert rec.result["train_cost_usd"] == pytest.approx(2400 * 3.0 / 1e6)
    (run,) = workspace.runs.list()
    (row,) = rows(workspace, [run])
    assert row.model == "ft:gpt-4o-mini-2024-07-18:org-test::0001"
    assert row.score == 1.0 and row.n == 8
    assert row.tune["train_cost_usd"] == pytest.approx(0.0072) and row.tune["provider"] == "openai"
    assert row.cost_per_1k == pytest.approx(1000 * (row.tokens_in * 0.3 + row.tokens_out * 1.2) / 1e6)
    assert "ft:gpt-4o-mini-2024-07-18:org-test::0001" in stdout and "$0.0072" in stdout

    # training rows = evaluation requests, message for message (the answer added, the weights aside)
    uploaded = [json.loads(x) for x in provider.files["file-0001"]["content"].decode().splitlines()]
    sent = {json.dumps(c["messages"]): c for c in provider.chats}
    for row_ in uploaded:
        *prompt, answer = row_["messages"]
        assert answer["weight"] == 1 and answer["content"] in ("positive", "negative")
        assert json.dumps([{k: v for k, v in m.items() if k != "weight"} for m in prompt]) in sent


def test_failed_job_is_recorded_and_the_next_run_starts_a_new_one(provider, make_task, workspace):
    from taskfit.study import prepare
    from taskfit.tuning.remote import tune_remote

    task, ds = prepare(_task(make_task, provider))
    provider.outcome = "failed"
    logs: list[str] = []
    rec = tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes, log=logs.append)
    assert rec.status == "failed" and rec.result["error"]["code"] == "invalid_training_file"
    assert "[error] The job failed due to an invalid training file." in logs
    provider.outcome = "succeeded"
    rec2 = tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes)
    assert rec2.id != rec.id and rec2.status == "done" and len(provider.jobs) == 2
    assert rec2.result["fine_tuned_model"] == "ft:gpt-4o-mini-2024-07-18:org-test::0002"
    # the same settings again: the finished model, no new job
    assert tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes).id == rec2.id
    assert len(provider.jobs) == 2


def test_cancelled_job(provider, make_task, workspace):
    from taskfit.study import prepare
    from taskfit.tuning.remote import cancel_remote, tune_remote

    task, ds = prepare(_task(make_task, provider))
    provider.release.clear()

    def cancel_while_waiting(_s: float) -> None:
        (running,) = workspace.tunes.list()
        if provider.polls >= 3:
            cancel_remote(workspace.tunes, running.id)

    rec = tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes, sleep=cancel_while_waiting)
    assert rec.status == "cancelled" and provider.jobs["ftjob-0001"]["status"] == "cancelled"
    with pytest.raises(Exception, match="no fine-tuned model"):
        from taskfit.tuning.remote import model_spec

        model_spec(rec)


def test_job_created_but_not_recorded_is_found_by_its_metadata(provider, make_task, workspace, monkeypatch):
    """The command stops between creating the job and storing its id: the next run finds that job."""
    from taskfit.study import prepare
    from taskfit.tuning.remote import tune_remote
    from taskfit.tuning.store import TuneStore

    task, ds = prepare(_task(make_task, provider))
    real = TuneStore.update

    def stop_at_job_id(self, tid, result):
        if "job_id" in result:
            raise KeyboardInterrupt
        real(self, tid, result)

    monkeypatch.setattr(TuneStore, "update", stop_at_job_id)
    with pytest.raises(KeyboardInterrupt):
        tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes)
    monkeypatch.setattr(TuneStore, "update", real)
    rec = tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes)
    assert rec.status == "done" and len(provider.jobs) == 1 and len(provider.files) == 1


def test_dpo_job_from_preference_pairs(provider, make_task, workspace, tmp_path):
    from taskfit.study import prepare
    from taskfit.tuning.remote import tune_remote

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "Review: great", "chosen": "positive", "rejected": "negative"}) + "\n")
    task, ds = prepare(_task(make_task, provider))
    rec = tune_remote(task, ds.split("train"), _spec(provider, method="dpo", preferences=str(prefs), beta=0.1),
                      store=workspace.tunes)
    assert rec.status == "done" and rec.objective == "dpo"
    assert provider.jobs["ftjob-0001"]["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
    (row,) = [json.loads(x) for x in provider.files["file-0001"]["content"].decode().splitlines()]
    assert row == {"input": {"messages": [{"role": "user", "content": "Review: great"}]},
                   "preferred_output": [{"role": "assistant", "content": "positive"}],
                   "non_preferred_output": [{"role": "assistant", "content": "negative"}]}


def test_bad_preference_file_names_line_and_field(tmp_path):
    from taskfit.errors import TaskfitError
    from taskfit.tuning.preferences import load_pairs

    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(TaskfitError, match=r"p.jsonl:2: field 'rejected'"):
        load_pairs(p)


def test_missing_key_is_a_clear_error(provider, make_task, workspace, monkeypatch):
    from taskfit.errors import TaskfitError
    from taskfit.study import prepare
    from taskfit.tuning.remote import tune_remote

    monkeypatch.delenv(KEY_ENV)
    task, ds = prepare(_task(make_task, provider))
    with pytest.raises(TaskfitError, match=KEY_ENV):
        tune_remote(task, ds.split("train"), _spec(provider), store=workspace.tunes)
