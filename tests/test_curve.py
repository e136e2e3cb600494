"""Learning curves: the crossing logic on fabricated rows, and `taskfit curve` on a tiny encoder built in code."""

from __future__ import annotations

import pytest
from test_tuning import tiny_models, tune_task  # noqa: F401  (fixtures)

from taskfit.curve import CURVE_STUDY, curves
from taskfit.types import ReportRow


def prompt(score=0.80, run_id="p"):
    return ReportRow(strategy="zero_shot", model="smollm2-135m", n=200, metric="accuracy", score=score,
                     ci_low=score - 0.06, ci_high=score + 0.05, run_id=run_id)


def point(size, score, name="minilm+full"):
    return ReportRow(strategy="classifier", model=f"{name}@{size}", n=200, metric="accuracy", score=score,
                     ci_low=score - 0.06, ci_high=score + 0.05, run_id=f"t{size}",
                     tune={"rows": size, "train_time_s": size / 10})


def pairs_vs(ref, p_values):
    """Paired tests of each point against the reference row, by size."""
    out = {}
    for size, (diff, p) in p_values.items():
        out[(f"t{size}", ref.run_id)] = {"p": p, "diff": diff, "ci": None, "n": 200}
    return out


def test_the_curve_matches_the_prompt_from_the_first_size_that_stays_not_worse():
    ref = prompt()
    rows = [ref, point(50, 0.55), point(100, 0.79), point(200, 0.70), point(400, 0.81), point(800, 0.86)]
    # 100 ties by chance, 200 falls back below: the curve matches from 400, where it stays
    pairs = pairs_vs(ref, {50: (-0.25, 1e-9), 100: (-0.01, 0.8), 200: (-0.10, 0.004), 400: (0.01, 0.7),
                           800: (0.06, 0.01)})
    (c,) = curves(rows, pairs)
    assert [p.size for p in c.points] == [50, 100, 200, 400, 800] and c.recipe == "minilm+full"
    assert c.reference is ref and c.matches_from == 400
    assert c.statement() == (
        "Fine-tuning (minilm+full) matches the best prompt row, zero_shot x smollm2-135m (0.800 [0.740, 0.850]) "
        "from ~400 labelled rows (not significantly worse, p >= 0.05 or better, at every size from there); it is "
        "significantly better from 800 rows.")


def test_a_curve_that_never_catches_up_says_so():
    ref = prompt(0.9)
    rows = [ref, point(50, 0.55), point(100, 0.60)]
    (c,) = curves(rows, pairs_vs(ref, {50: (-0.35, 1e-9), 100: (-0.30, 1e-8)}))
    assert c.matches_from is None
    assert c.statement().startswith("Fine-tuning (minilm+full) does not match the best prompt row, zero_shot x "
                                    "smollm2-135m (0.900 [0.840, 0.950]) with up to 100 labelled rows: at 100 it "
                                    "scores 0.600 [0.540, 0.650], -30.0 points (p = 0.000)")


def test_one_size_alone_is_not_a_curve():
    assert curves([prompt(), point(2000, 0.83, name="minilm+full")], {}) == []


def test_learning_curve_trains_nested_subsets_and_reuses_scored_prompt_rows(tune_task, tiny_models,  # noqa: F811
                                                                             workspace, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app
    from taskfit.curve import learning_curve
    from taskfit.report import latest_study_runs, write_report
    from taskfit.study import prepare, run_study

    path = tune_task(tuning=[{"method": "head", "objective": "classify", "model": str(tiny_models["bert"]),
                              "epochs": 1, "forgetting": False, "name": "bert-head"}])
    task, ds = prepare(path)
    ws = workspace
    _, (studied,) = run_study(path, workspace=ws)  # the prompt row, scored by an ordinary study first
    records = learning_curve(task, ds, task.config.tuning[0], [8, 16, 100], workspace=ws)
    tuned = [r for r in records if r.config["model"]["backend"] == "tuned"]
    assert [r.model for r in tuned] == ["bert-head@8", "bert-head@16", "bert-head@24"]  # 100 > 24 train rows
    assert all(r.study.startswith(CURVE_STUDY) for r in tuned)
    trained = [ws.tunes.get(r.config["model"]["path"].removeprefix("tuned:")).result["rows"] for r in tuned]
    assert trained == [8, 16, 24]
    assert [r.id for r in records if r not in tuned] == [studied.run_id]  # reused, not scored again

    res = CliRunner().invoke(app, ["curve", str(path), "--tuning", "bert-head", "--sizes", "8,16,24"])
    assert res.exit_code == 0, res.output
    assert "Learning curve: bert-head on tiny" in res.output
    assert "best prompt row: zero_shot x llama" in res.output
    assert "matches the best prompt row" in res.output or "does not match the best prompt row" in res.output
    assert sum(r.strategy == "zero_shot" for r in ws.runs.list(limit=100)) == 1
    # the curve's runs stay out of the task's latest study, whose report still plots the curve
    assert [r.id for r in latest_study_runs(ws.runs, "tiny")] == [studied.run_id]
    html = write_report(["tiny"], workspace=ws).read_text()
    assert 'id="plot-curve-1"' in html and "bert-head" in html and 'id="plot-volume"' in html


def test_an_unknown_tuning_row_is_a_clear_error(tune_task):  # noqa: F811
    from taskfit.curve import tuning_row
    from taskfit.errors import TaskfitError
    from taskfit.study import prepare

    task, _ = prepare(tune_task())
    with pytest.raises(TaskfitError, match="not a row of the task file's `tuning:`"):
        tuning_row(task, "nope")


def _with_curve(path, curve):
    import yaml

    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "curve": curve}))
    return path


def test_taskfit_run_puts_a_curve_entry_on_the_leaderboard_and_states_the_crossing(
        tune_task, tiny_models, workspace, taskfit_home):  # noqa: F811
    from typer.testing import CliRunner

    from taskfit.cli import app
    from taskfit.report import write_report

    path = _with_curve(tune_task(tuning=[{"method": "head", "objective": "classify", "epochs": 1,
                                          "model": str(tiny_models["bert"]), "forgetting": False,
                                          "name": "bert-head"}]),
                       [{"tuning": "bert-head", "sizes": [8, 16, 24]}])
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    runs = workspace.runs.list(limit=100)
    # 24 is every train row: the bert-head row itself is that point of the curve, not trained or scored twice
    assert sorted(r.model for r in runs) == ["bert-head", "bert-head@16", "bert-head@8", "llama"]
    trained = {r.model: workspace.tunes.get(r.config["model"]["path"].removeprefix("tuned:")).result["rows"]
               for r in runs if r.config["model"]["backend"] == "tuned"}
    assert trained == {"bert-head": 24, "bert-head@16": 16, "bert-head@8": 8}
    assert len({r.study for r in runs}) == 1  # one study: the curve's rows are in the task's latest study
    text = " ".join(res.output.split())  # the statement wraps
    assert ("Fine-tuning (bert-head) matches the best prompt row, zero_shot x llama" in text
            or "Fine-tuning (bert-head) does not match the best prompt row, zero_shot x llama" in text)
    html = write_report(["tiny"], workspace=workspace).read_text()
    assert 'id="plot-curve-1"' in html and "Fine-tuning (bert-head)" in html


def test_a_train_limit_caps_the_curve_sizes(tune_task, tiny_models, workspace):  # noqa: F811
    import taskfit

    path = _with_curve(tune_task(tuning=[{"method": "head", "objective": "classify", "epochs": 1,
                                          "model": str(tiny_models["bert"]), "forgetting": False,
                                          "name": "bert-head"}]),
                       [{"tuning": "bert-head", "sizes": [8, 16, 24]}])
    board = taskfit.evaluate(path, tuned=True, train_limit=16, workspace=workspace)
    # 16 and 24 both become 16 rows, which is the bert-head row itself under --train-limit 16
    assert sorted(r.model for r in board.rows) == ["bert-head", "bert-head@8", "llama"]
