"""Regression tests for inputs a careless user or an attacker would try: credentials in URLs, markup in model
output, malformed data files, YAML alias bombs, format-string escapes from the sandbox, path traversal through
task names, pickled checkpoints and the verdict of a one-row leaderboard."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import serving, write_jsonl
from sandbox_programs import FORMAT_ESCAPES

from taskfit.dataset import load_dataset
from taskfit.errors import TaskfitError
from taskfit.taskfile import load_task
from taskfit.types import LeaderboardRow

TASKFIT = [sys.executable, "-m", "taskfit.cli"]
SECRET = "sk-test-0123456789-do-not-store"


def _run(args: list[str], home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKFIT_HOME": str(home), **(env or {})}
    return subprocess.run(TASKFIT + args, capture_output=True, text=True, env=env, timeout=120)


# ---- credentials in model entries ----


@pytest.mark.parametrize("url", [
    "http://user:hunter2@127.0.0.1:8000/v1",
    "http://127.0.0.1:8000/v1?api-key=abc123",
    "https://example.test/v1?key=abc123",
    "https://example.test/v1?token=abc123",
    "https://example.test/v1?foo=1&access_token=abc123",
])
def test_credentials_in_base_url_are_refused_at_load(make_task, tmp_path, url):
    path = make_task(models=[{"backend": "scripted", "name": "fake"},
                             {"backend": "openai", "base_url": url, "model": "m"}])
    with pytest.raises(TaskfitError) as e:
        load_task(path)
    text = str(e.value)
    assert e.value.file == str(path) and e.value.field == "models[1].base_url"
    assert e.value.line == path.read_text().splitlines().index(
        next(line for line in path.read_text().splitlines() if "base_url" in line)) + 1
    assert "api_key_env" in text and "abc123" not in text and "hunter2" not in text


def test_credentials_in_base_url_are_refused_by_the_backend():
    from taskfit.backends.openai import OpenAIBackend
    from taskfit.taskfile import ModelSpec

    with pytest.raises(TaskfitError, match="api_key_env"):
        OpenAIBackend(ModelSpec(backend="openai", base_url="http://127.0.0.1:1/v1?api_key=abc", model="m"))


URL_SECRET = "SEMI-88-secret"
# every part of a URL that can carry a credential, each holding URL_SECRET
CREDENTIAL_URLS = [
    f"http://127.0.0.1:9/v1;token={URL_SECRET}",  # a matrix parameter
    f"http://127.0.0.1:9/v1;{URL_SECRET}",
    f"http://127.0.0.1:9/v1%3Btoken={URL_SECRET}",
    f"http://127.0.0.1:9/v1/auth={URL_SECRET}",
    f"http://127.0.0.1:9;token={URL_SECRET}/v1",  # in the authority
    f"http://127.0.0.1:9/v1?x={URL_SECRET}",  # a query parameter without a key-like name
    f"http://127.0.0.1:9/v1?token={URL_SECRET}",
    f"http://127.0.0.1:9/v1#{URL_SECRET}",  # a fragment
    f"http://user:{URL_SECRET}@127.0.0.1:9/v1",  # userinfo
    f"127.0.0.1:9/v1;{URL_SECRET}",  # no scheme
    f"ftp://127.0.0.1:9/{URL_SECRET}",
    f"http://127.0.0.1:9/v1\t;{URL_SECRET}",  # urlsplit drops the tab
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_every_credential_shape_in_a_url_is_refused_without_repeating_it(url):
    from taskfit.credentials import url_problem

    problem = url_problem(url)
    assert problem and URL_SECRET not in problem


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "https://api.openai.com/v1", "http://[::1]:8000/v1/",
                                 "https://example.test/openai/deployments/gpt-4o-mini"])
def test_plain_server_urls_are_accepted(url):
    from taskfit.credentials import url_problem

    assert url_problem(url) is None


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_a_credential_in_any_url_reaches_no_store_and_no_output(make_task, taskfit_home, url):
    """The task file's model rows (and nested ones: a tuned model's server), and `tune --provider --base-url`:
    each is refused with how to pass a key instead, and the secret is in no stored file and no output."""
    from typer.testing import CliRunner

    from taskfit.cli import app

    seen = []
    for models in ([{"backend": "openai", "name": "remote", "base_url": url, "model": "m"}],
                   [{"backend": "scripted", "name": "fake"}, {"backend": "tuned", "serve_via": {"base_url": url}}]):
        path = make_task(models=models, strategies=["zero_shot"])
        for args in (["validate", str(path)], ["eval", str(path), "--json"]):
            res = CliRunner().invoke(app, args)
            seen.append(res.output + str(res.exception))
            assert isinstance(res.exception, TaskfitError) and "base_url" in str(res.exception), seen[-1]
    res = CliRunner().invoke(app, ["tune", str(make_task()), "--provider", "openai", "-m", "gpt-x",
                                   "--base-url", url, "--no-evaluate"], env={"OPENAI_API_KEY": "k"})
    seen.append(res.output + str(res.exception))
    assert isinstance(res.exception, TaskfitError) and "base_url" in str(res.exception), seen[-1]
    # how to pass a key instead, unless the URL is not a URL at all
    assert all(any(why in s for why in ("api_key_env", "not a valid URL", "must start with http", "control character"))
               for s in seen), seen
    assert URL_SECRET not in "\n".join(seen)
    assert not _files_containing(taskfit_home, URL_SECRET)


class _EchoKeyServer(BaseHTTPRequestHandler):
    """Answers like a chat server; a message containing "FAIL" gets a 401 whose body echoes the credentials,
    as real servers do ("Incorrect API key provided: sk-...")."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        content = body["messages"][-1]["content"]
        if "FAIL" in content:
            status, reply = 401, {"error": {"message": f"Incorrect API key provided: "
                                            f"{self.headers.get('Authorization')} {self.headers.get('api-key')}"}}
        else:
            status, reply = 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoKeyServer)
    httpd.seen = []  # type: ignore[attr-defined]
    with serving(httpd):
        yield httpd


def _files_containing(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize("how", ["api_key_env", "headers_env"])
def test_a_secret_from_the_environment_is_stored_nowhere(make_task, tmp_path, echo_server, how):
    """A run with a key from an environment variable (one request's error echoes it back): the key is in
    no file of the store, not in the HTML report and not in anything the commands print."""
    home = tmp_path / "home"
    base_url = f"http://127.0.0.1:{echo_server.server_address[1]}/v1"
    model = {"backend": "openai", "name": "remote", "base_url": base_url, "model": "m", "max_retries": 0,
             **({"api_key_env": "TASKFIT_TEST_KEY"} if how == "api_key_env"
                else {"headers_env": {"api-key": "TASKFIT_TEST_KEY"}})}
    rows = [{"id": "a", "text": "fine film", "label": "positive"}, {"id": "b", "text": "FAIL here", "label": "negative"}]
    write_jsonl(tmp_path / "data" / "few.jsonl", rows)
    path = make_task(models=[model], strategies=["zero_shot"], output_mode="generate",
                     data={"test": "data/few.jsonl"})
    env = {"TASKFIT_TEST_KEY": SECRET}
    logs = []
    res = _run(["eval", str(path), "--json"], home, env)
    logs.append(res.stdout + res.stderr)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["failed"] == 1  # the FAIL row: its error text held the key before it was redacted
    sent = [h.get("Authorization") or h.get("api-key") for h in echo_server.seen]
    assert all(SECRET in (s or "") for s in sent)  # the key was really used
    for args in (["show", row["run_id"]], ["show", row["run_id"], "--example", "b"], ["runs"],
                 ["report", str(path), "--out", str(tmp_path / "report.html")]):
        res = _run(args, home, env)
        assert res.returncode == 0, res.stderr
        logs.append(res.stdout + res.stderr)
    assert SECRET not in "\n".join(logs)
    assert not _files_containing(home, SECRET)
    assert SECRET not in (tmp_path / "report.html").read_text()
    assert "Incorrect API key provided" in "\n".join(logs)  # the error itself is still shown, redacted


# ---- markup in what `taskfit show` prints ----


def test_show_prints_model_text_with_closing_tags(make_task, taskfit_home, tmp_path):
    rows = [{"id": "m1", "text": "great [/b] film", "label": "[/INST] positive"},
            {"id": "m2", "text": "terrible [bold]", "label": "negative"}]
    write_jsonl(tmp_path / "data" / "tags.jsonl", rows)
    path = make_task(labels=None, strategies=["zero_shot"], data={"test": "data/tags.jsonl"},
                     models=[{"backend": "scripted", "name": "fake[/x]",
                              "script": {"replies": {"great": "[/INST] positive", "terrible": "[/s] bad"}}}])
    res = _run(["eval", str(path), "--json"], taskfit_home)
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)[0]["run_id"]
    shown = _run(["show", run_id], taskfit_home)
    assert shown.returncode == 0, shown.stderr
    assert "[/INST] positive" in shown.stdout and "[/s] bad" in shown.stdout and "great [/b] film" in shown.stdout
    trace = _run(["show", run_id, "--example", "m2"], taskfit_home)
    assert trace.returncode == 0, trace.stderr
    assert "[/s] bad" in trace.stdout and "terrible [bold]" in trace.stdout


# ---- data files ----


def _csv_task(make_task, tmp_path, content: bytes) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "all.csv").write_bytes(content)
    return make_task(data={"test": "data/all.csv"})


def test_csv_row_with_a_missing_column_names_file_and_line(make_task, tmp_path):
    path = _csv_task(make_task, tmp_path, b"id,text,label\nc1,a great film,positive\nc2,a dull film\n")
    with pytest.raises(TaskfitError) as e:
        load_dataset(load_task(path))
    assert e.value.file == str(tmp_path / "data" / "all.csv") and e.value.line == 3
    assert "2 values" in str(e.value) and "3 columns" in str(e.value)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_invalid_utf8_names_file_and_line(make_task, tmp_path, suffix):
    good = [b'{"id": "a", "text": "fine", "label": "positive"}\n', b'{"id": "b", "text": "caf\xe9", '
            b'"label": "negative"}\n'] if suffix == "jsonl" else [b"id,text,label\n", b"b,caf\xe9,negative\n"]
    (tmp_path / "data").mkdir(exist_ok=True)
    data = tmp_path / "data" / f"bad.{suffix}"
    data.write_bytes(b"".join(good))
    path = make_task(data={"test": f"data/bad.{suffix}"})
    with pytest.raises(TaskfitError) as e:
        load_dataset(load_task(path))
    assert e.value.file == str(data) and e.value.line == 2 and "UTF-8" in str(e.value)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_byte_order_mark_is_stripped(make_task, tmp_path, suffix):
    body = (b'{"id": "a", "text": "fine", "label": "positive"}\n' if suffix == "jsonl"
            else b"id,text,label\na,fine,positive\n")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / f"bom.{suffix}").write_bytes(b"\xef\xbb\xbf" + body)
    ds = load_dataset(load_task(make_task(data={"test": f"data/bom.{suffix}"})))
    (ex,) = ds.split("test")
    assert ex.id == "a" and ex.fields["text"] == "fine" and ex.target == "positive"


def test_an_empty_data_file_fails_validate(make_task, taskfit_home, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "empty.jsonl").write_text("\n")
    res = _run(["validate", str(make_task(data={"test": "data/empty.jsonl"}))], taskfit_home)
    assert res.returncode == 2 and "no rows" in res.stderr and "empty.jsonl" in res.stderr, res.stderr


def test_an_empty_scored_split_fails_validate(make_task, taskfit_home, tmp_path):
    write_jsonl(tmp_path / "data" / "one.jsonl", [{"id": "a", "text": "fine", "label": "positive"}])
    path = make_task(data={"train": "data/one.jsonl"})  # the task is scored on `test`, which has no file
    res = _run(["validate", str(path)], taskfit_home)
    assert res.returncode == 2 and "no 'test' split" in res.stderr, res.stderr


def test_a_split_ratio_that_gets_no_rows_is_an_error(make_task, tmp_path):
    write_jsonl(tmp_path / "data" / "one.jsonl", [{"id": "a", "text": "fine", "label": "positive"}])
    path = make_task(data={"file": "data/one.jsonl", "split": {"train": 0.5, "test": 0.5}})
    with pytest.raises(TaskfitError, match="train.*0 of 1 rows"):
        load_dataset(load_task(path))


def test_yaml_alias_bomb_is_refused(make_task, tmp_path):
    path = make_task()
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = path.read_text().replace("strategies:\n- zero_shot\n", "strategies:\n- name: zero_shot\n  junk: *a9\n")
    assert "junk: *a9" in text
    # the anchors live under a strategy's free-form options; the alias list expands to 10**10 strings
    text = text.replace("- name: zero_shot\n", "- name: zero_shot\n  anchors:\n" +
                        "".join(f"    {line}\n" for line in lines))
    path.write_text(text)
    with pytest.raises(TaskfitError, match="alias") as e:
        load_task(path)
    assert e.value.file == str(path)


def test_recursive_yaml_alias_is_refused(make_task):
    path = make_task()
    path.write_text(path.read_text().replace("strategies:\n- zero_shot\n",
                                             "strategies:\n- name: zero_shot\n  loop: &x [*x]\n"))
    with pytest.raises(TaskfitError, match="alias"):
        load_task(path)


def test_a_few_yaml_aliases_still_load(make_task):
    path = make_task()
    text = path.read_text().replace("strategies:\n- zero_shot\n",
                                    "strategies:\n- &zs {name: few_shot, id: a, k: 1}\n- <<: *zs\n  id: b\n")
    path.write_text(text)
    a, b, _ = load_task(path).config.strategies
    assert (a.id, b.id) == ("a", "b") and a.options == b.options == {"k": 1}


# ---- the program sandbox ----


@pytest.mark.parametrize("code", FORMAT_ESCAPES)
def test_sandbox_refuses_attribute_lookups_in_format_strings(code):
    from taskfit.sandbox import run_program

    res = run_program(code)
    assert res.value is None and res.error and "not allowed" in res.error, res


def test_sandbox_still_runs_plain_format_strings():
    from taskfit.sandbox import run_program

    res = run_program("answer = '{:.2f}'.format(3.14159) + ' {0}-{name}-{{}}'.format(1, name='x')")
    assert res.error is None and res.value == "3.14 1-x-{}"


# ---- task names, report paths and checkpoints ----


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x\\y", ".hidden", ""])
def test_unsafe_task_names_are_refused(make_task, name):
    path = make_task(name=name)
    with pytest.raises(TaskfitError) as e:
        load_task(path)
    assert "name" in str(e.value)


def test_report_path_stays_in_the_reports_folder(tmp_path):
    from taskfit.report import default_path

    reports = (tmp_path / "reports").resolve()
    for title in ("../../x", "/etc/passwd", "..", "a/../../b"):
        path = default_path(SimpleNamespace(title=title, study="s1/../..", created=0), reports)
        assert path.resolve().parent == reports, (title, path)


class _Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_checkpoint_cannot_run_code(tmp_path):
    import torch

    from taskfit.tuning.train import TrainConfig, train

    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    with open(ckpt_dir / "last.pt", "wb") as f:
        pickle.dump({"trainable": {}, "planted": _Planted(marker)}, f)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TaskfitError, match="checkpoint"):
        train(model, [], TrainConfig(epochs=1, max_steps=1, lr=1e-3, batch_size=1), pad_id=0, device=torch.device("cpu"), checkpoint_dir=ckpt_dir)
    assert not marker.exists()


# ---- the verdict sentence ----


def _row(strategy: str, score: float, p: float | None) -> LeaderboardRow:
    return LeaderboardRow(strategy=strategy, model="m", score=score, ci_low=0.0, ci_high=1.0, p_vs_best=p,
                          cost_per_1k=0.0, tokens_in=10.0, tokens_out=1.0, time_per_1k_s=1.0)


def test_verdict_for_one_and_two_rows():
    from taskfit.leaderboard import verdict

    one = verdict([_row("a", 0.9, None)])
    assert "other" not in one and "Only one row" in one
    two_worse = verdict([_row("a", 0.9, None), _row("b", 0.5, 0.001)])
    assert "Every other row" not in two_worse and "The other row (b x m) is significantly worse" in two_worse
    two_tied = verdict([_row("a", 0.9, None), _row("b", 0.85, 0.4)])
    assert "Not significantly different (p >= 0.05): b x m." in two_tied
    untested = verdict([_row("a", 0.9, None), _row("b", 0.5, None)])
    assert "significantly worse" not in untested and "no shared examples" in untested
    three = verdict([_row("a", 0.9, None), _row("b", 0.5, 0.001), _row("c", 0.4, 0.001)])
    assert "Every other row is significantly worse" in three
