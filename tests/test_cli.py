"""The `taskfit` command end to end, in a subprocess, on the scripted model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TASKFIT = [sys.executable, "-m", "taskfit.cli"]


def _run(args, home, timeout=120, db=None):
    env = {**os.environ, "TASKFIT_HOME": str(home), **({"TASKFIT_DB": db} if db else {})}
    return subprocess.run(TASKFIT + args, capture_output=True, text=True, env=env, timeout=timeout)


def test_eval_json_rows(make_task, taskfit_home):
    res = _run(["eval", str(make_task()), "--json"], taskfit_home)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["strategy"] for r in rows] and {r["strategy"] for r in rows} == {"zero_shot", "few_shot_balanced"}
    for r in rows:
        assert r["n"] == 8 and r["ci_low"] <= r["score"] <= r["ci_high"]
        assert list(r)[:13] == ["strategy", "model", "n", "score", "ci_low", "ci_high", "p_vs_best", "latency_p50_ms",
                                "tokens_in", "tokens_out", "calls", "cache_hits", "cost_per_1k"]


def test_strategy_and_limit_options(make_task, taskfit_home):
    res = _run(["eval", str(make_task()), "--strategy", "zero_shot", "--limit", "3", "--json"], taskfit_home)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["strategy"] == "zero_shot" and row["n"] == 3


def test_malformed_line_exits_nonzero_naming_file_and_line(make_task, taskfit_home, tmp_path):
    path = make_task()
    data = tmp_path / "data" / "test.jsonl"
    lines = data.read_text().splitlines()
    lines[2] = "{not json"
    data.write_text("\n".join(lines) + "\n")
    res = _run(["eval", str(path)], taskfit_home)
    assert res.returncode == 2
    assert f"{data}:3: malformed JSON" in res.stderr
    assert "Traceback" not in res.stderr


def test_runs_and_show(make_task, taskfit_home):
    res = _run(["eval", str(make_task()), "--strategy", "zero_shot", "--json"], taskfit_home)
    run_id = json.loads(res.stdout)[0]["run_id"]
    listing = _run(["runs"], taskfit_home)
    assert run_id in listing.stdout and "done" in listing.stdout
    shown = _run(["show", run_id], taskfit_home)
    assert shown.returncode == 0 and "r1" in shown.stdout
    # wrong answers first: r1 (no keyword -> tie -> 'negative' is right) ... check the first row is a wrong one
    first_row = next(line for line in shown.stdout.splitlines() if line.startswith("│"))
    assert "0.00" in first_row
    trace = _run(["show", run_id, "--example", "r0"], taskfit_home)
    assert "call 1: score" in trace.stdout and "Review: a great and moving film" in trace.stdout


def test_strategies_and_metrics_lists(taskfit_home):
    s = _run(["strategies"], taskfit_home).stdout
    assert "zero_shot" in s and "few_shot" in s and "structured" in s
    m = _run(["metrics"], taskfit_home).stdout
    for name in ("exact_match", "numeric", "token_f1", "fuzzy", "json_match", "custom"):
        assert name in m


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
def test_kill_9_then_same_command_resumes(make_task, taskfit_home, tmp_path, store_url):
    """kill -9 mid-run, run again: finishes with no repeated model calls and the same scores as a clean run
    (on a SQLite file and on PostgreSQL, chosen by $TASKFIT_DB and by --db)."""
    log = tmp_path / "calls.jsonl"
    script = {"scores": {"great": {"positive": -0.1, "negative": -3.0}, "terrible": {"negative": -0.1}},
              "delay_s": 0.25, "call_log": str(log)}
    rows = [{"id": f"k{i}", "text": f"review {i} {'great' if i % 3 else 'terrible'}",
             "label": "positive" if i % 3 else "negative"} for i in range(40)]
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = make_task(data={"test": "data/big.jsonl"}, strategies=["zero_shot"],
                     models=[{"backend": "scripted", "script": script}])
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home), "TASKFIT_DB": store_url}
    proc = subprocess.Popen(TASKFIT + ["eval", str(path), "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 36):
        time.sleep(0.05)  # past the first chunk (32 rows) so some predictions are stored
    time.sleep(0.1)  # land the kill inside the next call (each takes 0.25 s), as a real kill would
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    calls_before = log.read_text().splitlines()
    assert 0 < len(calls_before) < 40
    res = _run(["eval", str(path), "--json"], taskfit_home, db=store_url)
    assert res.returncode == 0, res.stderr
    calls_all = log.read_text().splitlines()
    prompts = [json.loads(c)["prompt"] for c in calls_all]
    assert len(prompts) == len(set(prompts)) == 40  # every example's call made exactly once, across both processes
    (row,) = json.loads(res.stdout)
    assert row["n"] == 40 and row["score"] == 1.0
    runs = _run(["--db", store_url, "runs"], taskfit_home).stdout
    assert runs.count("done") == 1 and "running" not in runs
    assert "done" in _run(["runs"], taskfit_home, db=store_url).stdout
    assert "done" not in _run(["runs"], taskfit_home).stdout  # the home folder's own database: untouched


def test_bundled_model_default_resolves(tmp_path):
    # the task file shorthand `models: [bundled]` means the packaged SmolLM2 on the hf backend
    from taskfit.taskfile import TaskConfig

    c = TaskConfig.model_validate({"name": "x", "data": {"test": "t.jsonl"}, "inputs": ["a"], "output": "b",
                                   "models": ["bundled"]})
    assert c.models[0].backend == "hf" and c.models[0].label() == "smollm2-135m"
    assert yaml.safe_dump(c.model_dump())  # the resolved config can be saved next to a run
    assert Path(__file__).exists()


def test_limit_zero_means_every_row(make_task, taskfit_home):
    path = make_task(limit=3, strategies=["zero_shot"])
    capped = json.loads(_run(["eval", str(path), "--json"], taskfit_home).stdout)
    everything = json.loads(_run(["eval", str(path), "--limit", "0", "--json"], taskfit_home).stdout)
    assert capped[0]["n"] == 3 and everything[0]["n"] == 8


def test_a_model_name_that_is_not_on_disk_is_an_error_not_a_download(make_task, taskfit_home):
    res = _run(["eval", str(make_task()), "--model", "no-such-model", "--strategy", "zero_shot"], taskfit_home)
    assert res.returncode == 2, res.stderr
    assert "model path 'no-such-model' does not exist" in res.stderr
    assert "huggingface.co" not in res.stderr and "Retrying" not in res.stderr
