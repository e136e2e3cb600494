"""The Python API: the README's example runs as written, and `taskfit.evaluate` on a task file, a loaded task
or rows in memory gives the same typed leaderboard the command line prints."""

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import taskfit
from taskfit.cli import app
from taskfit.errors import TaskfitError

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate([
    ("a great and moving film", "positive"), ("boring and far too long", "negative"),
    ("i loved every minute", "positive"), ("terrible acting throughout", "negative")])]
SCRIPTED = {"backend": "scripted", "name": "fake",
            "script": {"replies": {"great": "positive", "terrible": "negative"}, "default": "hmm"}}


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_example_prints_a_leaderboard_with_cis(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "<README.md: Python API>", "exec"), {"__name__": "__main__"})
    out = printed.getvalue()
    assert "Leaderboard: task (same_label), n = 8" in out
    cis = re.findall(r"^\s+(zero_shot|structured)\s+demo-model\s+(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]", out,
                     flags=re.M)
    assert {c[0] for c in cis} == {"zero_shot", "structured"}
    for _, score, lo, hi in cis:
        assert float(lo) <= float(score) <= float(hi) and float(lo) < float(hi)
    assert "Best: " in out and re.search(r"best: \w+, \d\.\d\d \[\d\.\d\d, \d\.\d\d\]", out)
    assert max(len(line) for line in out.splitlines()) <= 120
    assert (tmp_path / "taskfit-demo" / "taskfit.db").exists()  # the workspace it named, nothing elsewhere
    assert not (tmp_path / ".taskfit").exists()


def test_rows_in_memory_with_a_python_metric_are_typed_and_match_by_hand(tmp_path):
    def exact(prediction, target):
        return prediction == target

    task = taskfit.Task.from_rows(ROWS, inputs=["text"], output="label", metric=exact, models=[SCRIPTED])
    board = taskfit.evaluate(task, strategies=["zero_shot"], workspace=taskfit.Workspace.open(tmp_path / "ws"))
    (row,) = board.rows
    assert isinstance(row, taskfit.LeaderboardRow) and row.metric == "exact" and row.n == 4
    assert row.score == 0.5  # 'great' and 'terrible' rows right, the other two answer 'hmm'
    assert row.ci_low < 0.5 < row.ci_high and board.best is row and "Best: zero_shot x fake" in board.verdict
    assert board.to_json()[0]["score"] == 0.5 and json.dumps(board.to_json())


def test_a_task_file_gives_the_same_rows_as_taskfit_eval_json(make_task, tmp_path, monkeypatch):
    path = make_task()
    board = taskfit.evaluate(path, workspace=taskfit.Workspace.open(tmp_path / "api"))
    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path / "cli"))
    res = CliRunner().invoke(app, ["eval", str(path), "--json"])
    cli_rows = json.loads(res.output[res.output.index("[\n"):])
    drop = ("run_id", "latency_p50_ms", "time_per_1k_s")  # a new run id; measured times differ
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(board.to_json()) == strip(cli_rows)


def test_a_loaded_task_strategy_mappings_and_model_specs(make_task, tmp_path):
    from taskfit.taskfile import ModelSpec, load_task

    task = load_task(make_task())
    board = taskfit.evaluate(task, strategies=[{"name": "few_shot", "k": 1, "id": "one_shot_demo"}],
                             models=[ModelSpec(**SCRIPTED)], limit=3,
                             workspace=taskfit.Workspace.open(tmp_path))
    (row,) = board
    assert row.strategy == "one_shot_demo" and row.model == "fake" and row.n == 3


def test_two_workspaces_keep_their_runs_apart(tmp_path):
    task = taskfit.Task.from_rows(ROWS, inputs=["text"], output="label", models=[SCRIPTED])
    a, b = taskfit.Workspace.open(tmp_path / "a"), taskfit.Workspace.open(tmp_path / "b")
    board_a = taskfit.evaluate(task, strategies=["zero_shot"], workspace=a)
    assert [r.id for r in a.runs.list()] == [board_a[0].run_id] and b.runs.list() == []
    board_b = taskfit.evaluate(task, strategies=["zero_shot"], workspace=b)
    assert board_b[0].cache_hits == 0  # b has its own call cache
    assert [r.id for r in b.runs.list()] == [board_b[0].run_id] and len(a.runs.list()) == 1


def test_bad_rows_and_bad_arguments_are_clear_errors(tmp_path):
    ws = taskfit.Workspace.open(tmp_path)
    task = taskfit.Task.from_rows([*ROWS, {"id": "x", "text": "no label"}], inputs=["text"], output="label",
                                  models=[SCRIPTED])
    with pytest.raises(TaskfitError, match=r"test-rows:5: .*missing field 'label'"):
        taskfit.evaluate(task, workspace=ws)
    twice = taskfit.Task.from_rows([ROWS[0], ROWS[0]], inputs=["text"], output="label", models=[SCRIPTED])
    with pytest.raises(TaskfitError, match=r"test-rows:2: duplicate id 'r0' in the test split"):
        taskfit.evaluate(twice, workspace=ws)
    with pytest.raises(TaskfitError, match="invalid task: .*output field 'label' is also listed in inputs"):
        taskfit.Task.from_rows(ROWS, inputs=["text", "label"], output="label")
    with pytest.raises(TaskfitError, match="unknown metric 'nope'"):
        taskfit.Task.from_rows(ROWS, inputs=["text"], output="label", metric="nope")
    ok = taskfit.Task.from_rows(ROWS, inputs=["text"], output="label", models=[SCRIPTED])
    with pytest.raises(TaskfitError, match="not a row of the task file"):
        taskfit.evaluate(ok, strategies=["no_such_strategy"], workspace=ws)


def test_to_pandas_names_the_missing_package(tmp_path, monkeypatch):
    board = taskfit.Leaderboard([], task="t")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(TaskfitError, match="pip install pandas"):
        board.to_pandas()


def test_report_and_optimize_stay_functions_after_their_modules_are_imported():
    import taskfit.optimize.run  # noqa: F401  (the import system sets submodules on their package)
    import taskfit.report  # noqa: F401

    assert callable(taskfit.report) and callable(taskfit.optimize) and taskfit.report.__module__ == "taskfit.api"
    from taskfit.report import write_report  # the modules stay importable by name

    assert callable(write_report)


def test_report_of_a_leaderboard(tmp_path):
    ws = taskfit.Workspace.open(tmp_path)
    train = [{**r, "id": "t" + r["id"]} for r in ROWS]
    task = taskfit.Task.from_rows(ROWS, inputs=["text"], output="label", models=[SCRIPTED], train=train)
    board = taskfit.evaluate(task, strategies=["zero_shot", {"name": "few_shot", "k": 2}], workspace=ws)
    path = taskfit.report(board, workspace=ws)
    assert path.parent == ws.reports_dir and all(r.run_id in path.read_text() for r in board)
