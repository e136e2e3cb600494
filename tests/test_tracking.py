"""Experiment tracking: `taskfit export mlflow` and `--track mlflow`, read back from a real MLflow tracking
server (the slow tier: starting one takes 10 s or more), and the fast checks that need no MLflow."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text

from taskfit.errors import TaskfitError
from taskfit.tracking.mlflow import metric_key, predictions_table, row_metrics, run_params
from taskfit.types import LeaderboardRow, PredictionRow

ROOT = Path(__file__).resolve().parents[1]
TASKFIT = [sys.executable, "-m", "taskfit.cli"]

# -- without MLflow (fast) -------------------------------------------------------------------------------


def test_row_metrics_are_the_numbers_of_the_json_row():
    row = LeaderboardRow(
        strategy="rag", model="m", score=0.5, ci_low=0.25, ci_high=0.75, n=8, metric="accuracy", p_vs_best=None,
        metrics={"accuracy": 0.5, "recall@k": 1.0}, tune={
            "id": "t1", "method": "lora", "train_time_s": 12.5, "fallback": False, "curve": [{"step": 1, "loss": 2}],
            "forgetting": {"score_change": -0.05, "ppl_change_pct": None}, "plan": {"peak_mem_mb": 300}})
    got = row_metrics(row)
    assert got["score"] == 0.5 and got["ci_low"] == 0.25 and got["n"] == 8.0
    assert got["metrics.accuracy"] == 0.5 and got["metrics.recall_k"] == 1.0  # '@' is not allowed in MLflow names
    assert got["tune.train_time_s"] == 12.5 and got["tune.forgetting.score_change"] == -0.05
    assert got["tune.plan.peak_mem_mb"] == 300.0
    # None (p vs best of the best row, an unmeasured footprint), flags, text and curves are not metrics
    for absent in ("p_vs_best", "size_mb", "precision", "tune.fallback", "tune.method", "tune.curve",
                   "tune.forgetting.ppl_change_pct", "strategy", "mode"):
        assert absent not in got
    assert metric_key("a b/c.d-e_f") == "a b/c.d-e_f" and metric_key("x@1:2") == "x_1_2"


def test_run_params_flatten_the_settings(workspace, make_task):
    from taskfit import api

    board = api.evaluate(make_task(strategies=[{"name": "few_shot", "k": 2}]), workspace=workspace)
    (run,) = board.runs
    params = run_params(run, {"method": "lora", "rank": 8, "target_modules": ["q", "v"], "lr": None})
    assert params["task"] == "tiny" and params["data_hash"] == run.data_hash and params["split"] == "test"
    assert params["strategy.name"] == "few_shot" and params["strategy.k"] == 2
    assert params["model.backend"] == "scripted" and params["model.script.scores.great.positive"] == -0.1
    assert params["tune.rank"] == 8 and params["tune.target_modules"] == ["q", "v"] and "tune.lr" not in params
    assert params["versions.python"] and "git_commit" in params  # None outside a repository: not logged


def test_predictions_table_has_a_row_per_example():
    preds = [PredictionRow(run_id="r", idx=i, example_id=f"e{i}", inputs={"text": f"t{i}"}, target="a",
                           answer="a" if i else None, score=float(i), metrics={"accuracy": float(i), "f1": 0.5})
             for i in range(3)]
    table = predictions_table(preds)
    assert table["example_id"] == ["e0", "e1", "e2"] and table["input.text"] == ["t0", "t1", "t2"]
    assert table["answer"] == [None, "a", "a"] and table["metric.f1"] == [0.5] * 3
    assert {len(v) for v in table.values()} == {3}


def test_taskfit_and_its_other_commands_never_import_mlflow(make_task, taskfit_home):
    code = ("import sys, taskfit, taskfit.api, taskfit.tracking\n"
            "from taskfit.cli import app\n"
            "try:\n"
            f"    app(['eval', {str(make_task())!r}, '--json'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW', file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TASKFIT_HOME": str(taskfit_home)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)[0]["n"] == 8 and res.stderr.strip().endswith("NO-MLFLOW")


def test_without_mlflow_the_error_says_how_to_install_it(make_task, workspace, monkeypatch):
    from taskfit import api

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(TaskfitError, match=r"pip install 'taskfit\[mlflow\]'"):
        api.export_mlflow([str(make_task())], workspace=workspace)
    # --track connects before any model is called: nothing runs, nothing is half done
    from taskfit.commands import export

    monkeypatch.setattr("taskfit.commands.workspace", lambda: workspace)
    with pytest.raises(TaskfitError, match=r"pip install 'taskfit\[mlflow\]'"):
        export.start_tracking("mlflow", None)
    assert workspace.runs.list() == []


def test_track_options_are_checked(workspace, monkeypatch):
    from taskfit.commands import export

    monkeypatch.setattr("taskfit.commands.workspace", lambda: workspace)
    with pytest.raises(TaskfitError, match=r"--track 'wandb': unknown tracker \(choose from mlflow\)"):
        export.start_tracking("wandb", None)
    with pytest.raises(TaskfitError, match="add --track mlflow"):
        export.start_tracking(None, "http://127.0.0.1:1")
    assert export.start_tracking(None, None) is None


# -- against a real MLflow tracking server (slow) --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a SQLite store and a local artifact folder, on a free loopback port; its URI."""
    pytest.importorskip("mlflow")
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a busy 2-core machine has taken over a minute to start one
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _rows_in_mlflow(uri: str, experiment: str):
    """The experiment's row runs by taskfit run id, and its parent runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    rows = {r.data.tags["taskfit.run_id"]: r for r in runs if r.data.tags.get("taskfit.kind") == "row"}
    parents = [r for r in runs if r.data.tags.get("taskfit.kind") == "study"]
    return client, rows, parents


def _same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


def _check_rows(uri: str, experiment: str, board_rows: list[dict]) -> tuple:
    """Every leaderboard row is one MLflow run under the study's parent, its metrics equal to the row's."""
    client, rows, parents = _rows_in_mlflow(uri, experiment)
    assert set(rows) == {r["run_id"] for r in board_rows} and len(parents) == 1
    for r in board_rows:
        got = rows[r["run_id"]]
        metrics = got.data.metrics
        # the leaderboard's own numbers, read by name from its JSON row
        for key in ("n", "score", "ci_low", "ci_high", "latency_p50_ms", "tokens_in", "tokens_out", "calls",
                    "cache_hits", "cost_per_1k", "time_per_1k_s", "parse_fail_rate", "failed"):
            assert _same_number(metrics[key], float(r[key])), key
        if r["p_vs_best"] is None:  # left out, or NaN where an earlier export had a value
            assert math.isnan(metrics.get("p_vs_best", math.nan))
        else:
            assert _same_number(metrics["p_vs_best"], r["p_vs_best"])
        for name, value in r["metrics"].items():
            assert _same_number(metrics[f"metrics.{metric_key(name)}"], value)
        # and nothing else: every metric with a value is a number of the row
        numbers = {k for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        logged = {k for k, v in metrics.items() if not math.isnan(v)}
        assert logged == numbers | {f"metrics.{metric_key(k)}" for k in r["metrics"]} | \
            {k for k in logged if k.startswith("tune.")}
        assert got.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert got.data.tags["strategy"] == r["strategy"] and got.data.tags["model"] == r["model"]
        assert got.info.status == "FINISHED"
    return client, rows, parents


@pytest.mark.slow
def test_export_to_a_tracking_server_then_again(mlflow_server, make_task, workspace, tmp_path, monkeypatch):
    from taskfit import api
    from taskfit.report.data import collect

    monkeypatch.chdir(tmp_path)
    board = api.evaluate(make_task(), workspace=workspace)
    (first,) = api.export_mlflow(board, tracking_uri=mlflow_server, workspace=workspace)
    assert [r.created for r in first.runs] == [True, True]
    client, rows, (parent,) = _check_rows(mlflow_server, "tiny", board.to_json())

    pick = collect(workspace, board.runs).recommendation.row.run_id
    for run_id, run in rows.items():
        tags, params = run.data.tags, run.data.params
        assert tags["recommended"] == ("true" if run_id == pick else "false") and tags["technique"] == "prompting"
        assert params["task"] == "tiny" and params["data_hash"] == board.runs[0].data_hash
        assert params["model.backend"] == "scripted" and params["strategy.name"] in ("zero_shot", "few_shot")
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json", str(tmp_path)))
                           .read_text())
        stored = workspace.runs.predictions(run_id, with_trace=False)
        ids = table["data"]
        assert [row[table["columns"].index("example_id")] for row in ids] == [p.example_id for p in stored]
        assert [row[table["columns"].index("score")] for row in ids] == [p.score for p in stored]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"report.html", "task"}
    html = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path / "p"))).read_text()
    assert all(r.run_id in html for r in board.rows)
    assert parent.data.tags["taskfit.study"] == board.runs[0].study

    # an export cut short leaves a run running: the next one finishes it
    client.update_run(rows[pick].info.run_id, status="RUNNING")
    # again, through the command line: the same runs are updated, none is added
    res = subprocess.run(TASKFIT + ["export", "mlflow", "tiny", "--tracking-uri", mlflow_server], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TASKFIT_HOME": str(workspace.root)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tiny: 2 rows (0 new, 2 updated)" in " ".join(res.stderr.split())
    client, again, parents = _check_rows(mlflow_server, "tiny", board.to_json())
    assert {k: r.info.run_id for k, r in again.items()} == {k: r.info.run_id for k, r in rows.items()}
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    predictions = client.download_artifacts(rows[pick].info.run_id, "predictions.json", str(tmp_path / "again"))
    assert len(json.loads(Path(predictions).read_text())["data"]) == 8  # not appended to a second time


@pytest.mark.slow
def test_track_mlflow_on_eval_exports_each_row_as_it_finishes(mlflow_server, make_task, taskfit_home, workspace,
                                                               tmp_path):
    path = make_task(name="tiny_tracked")
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home), "MLFLOW_TRACKING_URI": mlflow_server}
    res = subprocess.run(TASKFIT + ["eval", str(path), "--json", "--track", "mlflow"], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads(res.stdout)
    _check_rows(mlflow_server, "tiny_tracked", board)
    assert "tiny_tracked: 2 rows" in " ".join(res.stderr.split())

    # as it goes: after the first arm, its row is in MLflow before the second arm starts
    from taskfit import api
    from taskfit.tracking.mlflow import MlflowTracker

    tracker = MlflowTracker(workspace, tracking_uri=mlflow_server)
    seen = []

    def on_run(run):
        tracker.on_run(run)
        seen.append(len(_rows_in_mlflow(mlflow_server, "tiny_live")[1]))

    live = api.evaluate(make_task(name="tiny_live"), workspace=workspace, on_run=on_run)
    assert seen == [1, 2] and tracker.error is None
    _check_rows(mlflow_server, "tiny_live", live.to_json())


@pytest.mark.slow
def test_track_mlflow_on_optimize_exports_its_test_split_rows(mlflow_server, make_task, taskfit_home, workspace,
                                                              tmp_path):
    from taskfit.leaderboard import rows

    train = [{"id": f"t{i}", "text": t, "label": y} for i, (t, y) in
             enumerate([("a great film", "positive"), ("terrible acting", "negative")] * 10)]
    path = make_task(name="tiny_optimized", strategies=["zero_shot"])
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    res = subprocess.run(TASKFIT + ["optimize", str(path), "--budget", "40", "--strategies", "zero_shot,few_shot",
                                    "--track", "mlflow", "--tracking-uri", mlflow_server], capture_output=True,
                         text=True, env={**os.environ, "TASKFIT_HOME": str(taskfit_home)}, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    opt_id = res.stdout.split("--strategy optimized:")[1].split()[0]
    # in the order they ran: of two tied rows, the leaderboard's best is the first
    runs = sorted((r for r in workspace.runs.list() if r.study == f"optimize-{opt_id}"), key=lambda r: r.created)
    board = [r.to_json() for r in rows(workspace, runs)]
    assert {r["strategy"] for r in board} == {f"optimized:{opt_id}", "zero_shot"}
    _check_rows(mlflow_server, "tiny_optimized", board)


@pytest.mark.slow
def test_a_wider_export_updates_each_rows_comparison_with_the_best(mlflow_server, make_task, workspace, tmp_path,
                                                                   monkeypatch):
    import yaml

    from taskfit import api
    from taskfit.leaderboard import rows

    monkeypatch.chdir(tmp_path)
    flat = {"backend": "scripted", "name": "flat", "script": {"default": "hmm"}}  # every label ties: 'negative'
    models = yaml.safe_load(make_task().read_text())["models"]
    board = api.evaluate(make_task(name="tiny_wider", models=[*models, flat]), workspace=workspace)
    best_id = board.rows[0].run_id
    others = [r for r in board.runs if r.id != best_id]
    api.export_mlflow([r.id for r in others], tracking_uri=mlflow_server, workspace=workspace)
    narrow = {r.run_id: r.p_vs_best for r in rows(workspace, others)}
    api.export_mlflow(board, tracking_uri=mlflow_server, workspace=workspace)
    wide = {r.run_id: r.p_vs_best for r in board.rows}
    # a row's p vs best fell once the better row joined: the lower, later value is the one MLflow shows
    assert any(narrow[k] is not None and wide[k] < narrow[k] for k in narrow)
    _check_rows(mlflow_server, "tiny_wider", board.to_json())
    # exported alone, the worst row is the best of one: its p vs best has no value any more
    worst = board.rows[-1].run_id
    api.export_mlflow([worst], tracking_uri=mlflow_server, workspace=workspace)
    assert math.isnan(_rows_in_mlflow(mlflow_server, "tiny_wider")[1][worst].data.metrics["p_vs_best"])


@pytest.mark.slow
def test_a_tracker_that_fails_does_not_stop_the_study(make_task, workspace, monkeypatch):
    from taskfit import api
    from taskfit.tracking.mlflow import MlflowTracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    tracker = MlflowTracker(workspace, tracking_uri=f"http://127.0.0.1:{_free_port()}")
    board = api.evaluate(make_task(), workspace=workspace, on_run=tracker.on_run)
    assert len(board) == 2 and all(r.status == "done" for r in board.runs)
    assert tracker.error and "127.0.0.1" in tracker.error


@pytest.mark.slow
def test_a_tuned_row_carries_its_tuning_spec_and_adapter(mlflow_server, make_task, workspace, tmp_path, monkeypatch):
    from taskfit import api

    monkeypatch.chdir(tmp_path)
    board = api.evaluate(make_task(name="tiny_tuned", strategies=["zero_shot"]), workspace=workspace)
    (run,) = board.runs
    rec = workspace.tunes.create(key="k", task_name="tiny_tuned", task_path=run.task_path, method="lora",
                                 objective="sft", base_model="bundled", data_hash=run.data_hash, seed=0,
                                 spec={"method": "lora", "rank": 8, "epochs": 1.0}, versions={})
    (rec.folder / "adapter_config.json").write_text('{"r": 8}')
    workspace.tunes.finish(rec.id, {"method": "lora", "train_time_s": 42.0, "peak_mem_mb": 512.0,
                                    "forgetting": {"score_change": -0.125}})
    # the stored run as a fine-tuned model's run: its model entry names the tuned model
    config = {**run.config, "model": {"backend": "tuned", "path": f"tuned:{rec.id}", "name": "fake"}}
    with workspace.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET config = :c WHERE id = :id"), {"c": json.dumps(config), "id": run.id})
    (done,) = api.export_mlflow([run.id], tracking_uri=mlflow_server, workspace=workspace)
    assert [r.created for r in done.runs] == [True]
    client, rows, _ = _check_rows(mlflow_server, "tiny_tuned", [r.to_json() for r in _board_rows(workspace, run.id)])
    got = rows[run.id]
    assert got.data.metrics["tune.train_time_s"] == 42.0 and got.data.metrics["tune.forgetting.score_change"] == -0.125
    assert got.data.params["tune.rank"] == "8" and got.data.tags["technique"] == "fine_tune"
    assert [a.path for a in client.list_artifacts(got.info.run_id, "adapter")] == ["adapter/adapter_config.json"]
    again = api.export_mlflow([run.id], tracking_uri=mlflow_server, workspace=workspace)
    assert [r.created for r in again[0].runs] == [False]


def _board_rows(workspace, run_id: str) -> list[LeaderboardRow]:
    from taskfit.leaderboard import rows

    return rows(workspace, [workspace.runs.get(run_id)])


@pytest.mark.slow  # the bundled model on 20 rows of SST-2, as docs/tracking.md shows
def test_the_docs_commands_on_the_bundled_model(mlflow_server, tmp_path):
    import re

    text_ = (ROOT / "docs" / "tracking.md").read_text()
    commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text_, flags=re.S)
                for line in block.splitlines() if line.strip().startswith("taskfit ")]
    assert any("--track mlflow" in c for c in commands) and any(c.startswith("taskfit export mlflow") for c in commands)
    env = {**os.environ, "TASKFIT_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": mlflow_server}
    for cmd in commands:
        res = subprocess.run(TASKFIT + cmd.split()[1:], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert res.returncode == 0, f"{cmd}: {res.stderr[-3000:]}"
    from taskfit.leaderboard import rows
    from taskfit.report.data import latest_study_runs
    from taskfit.workspace import Workspace

    ws = Workspace.open(tmp_path / "home")
    try:
        board = [r.to_json() for r in rows(ws, latest_study_runs(ws.runs, "sst2"))]
    finally:
        ws.close()
    assert board and board[0]["n"] == 20
    _check_rows(mlflow_server, "sst2", board)
