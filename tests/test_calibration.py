"""Costs priced from work x calibrated unit costs: cached per model, unchanged when measured times inflate."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from sqlalchemy import text
from test_tuning import _tune, tiny_models, tune_task  # noqa: F401  (fixtures: a 2-layer Llama and BERT)

from taskfit import calibration


def _priced(path):
    """The task file with an hourly price and a volume, so the recommendation picks on cost."""
    config = yaml.safe_load(path.read_text())
    config["costs"] = {"price_per_hour": 0.10, "volume": "1M"}
    path.write_text(yaml.safe_dump(config))
    return path


def test_calibration_is_measured_once_per_model_device_and_threads(tiny_models, workspace):  # noqa: F811
    from taskfit.backends.hf import HFBackend
    from taskfit.taskfile import ModelSpec

    backend = HFBackend(tiny_models["llama"], ModelSpec(backend="hf", path=str(tiny_models["llama"])))
    measured = []
    hook = backend.calibrate
    backend.calibrate = lambda repeats: measured.append(repeats) or hook(repeats)
    first = calibration.calibrated(workspace.unit_costs, backend, repeats=2)
    second = calibration.calibrated(workspace.unit_costs, backend, repeats=2)
    assert measured == [2]  # the second call read the stored unit costs
    assert set(first) == {"forward", "generate"} and first == second
    assert all(c.seconds_per_token > 0 and c.threads >= 1 and c.batch == "8x64" for c in first.values())
    # a plugin backend without the hook is priced from its measured time
    assert calibration.calibrated(workspace.unit_costs, object()) == {}


def _cost_views(workspace, runs):
    """The report's data, its cost table and the wide leaderboard, as text."""
    from rich.console import Console

    from taskfit.commands.report import cost_table
    from taskfit.costs import parse_volume
    from taskfit.leaderboard import render
    from taskfit.report.data import collect

    data = collect(workspace, runs, volume=parse_volume("1M"))
    out = Console(width=250)  # no cell wraps
    table = cost_table(data.recommendation)
    # every column but the median latency, which is measured time and moves with load (it is not a cost)
    cells = {str(col.header): list(col._cells) for col in table.columns if col.header != "p50 ms"}
    with out.capture() as board:
        out.print(render(data.rows, wide=True))
    return data, {**cells, "caption": table.caption}, board.get()


def _inflate_times(workspace, factor: float) -> None:
    """The same work measured on a machine ``factor`` times as busy: every stored latency and training time."""
    with workspace.engine.begin() as conn:
        conn.execute(text("UPDATE predictions SET latency_ms = latency_ms * :f"), {"f": factor})
    for rec in workspace.tunes.list():
        workspace.tunes.update(rec.id, {**rec.result, "train_time_s": rec.result["train_time_s"] * factor})


def _assert_same_costs_and_pick(workspace, runs):
    before, table_before, board_before = _cost_views(workspace, runs)
    assert {r.cost_basis for r in before.rows} == {"work"}
    assert all(r.cost_uncertainty is not None and 0.05 <= r.cost_uncertainty <= 0.25 for r in before.rows)
    assert all(c.startswith("work x unit cost ±") for c in table_before["from"])
    assert "p50 ms" not in table_before and len(table_before) > 5
    _inflate_times(workspace, 3)
    after, table_after, board_after = _cost_views(workspace, runs)
    assert table_after == table_before
    assert after.recommendation.row.run_id == before.recommendation.row.run_id
    assert [c for _, c in after.recommendation.costs] == [c for _, c in before.recommendation.costs]
    for b, a in zip(before.rows, after.rows, strict=True):  # the raw timing stays on the row, as evidence
        assert abs(a.time_per_1k_s - 3 * b.time_per_1k_s) <= 1e-6 * max(1.0, b.time_per_1k_s)
        assert a.work_time_per_1k_s == b.work_time_per_1k_s
    assert board_after != board_before and "(work " in board_after
    return before, after


def test_costs_do_not_move_when_measured_times_triple(tune_task, workspace):  # noqa: F811
    """A loaded machine inflates wall time 2-5x: the leaderboard still shows the measured times, but the cost
    table and the pick come from work x calibrated unit costs, so they stay the same."""
    from taskfit.study import run_study

    path = _priced(tune_task())
    run_study(path, workspace=workspace, limit=4)
    _assert_same_costs_and_pick(workspace, workspace.runs.list(limit=10))


@pytest.mark.slow  # trains a model and evaluates two rows: several seconds
def test_tuned_row_costs_and_pick_do_not_move_when_measured_times_triple(tune_task, tiny_models, workspace):  # noqa: F811
    from taskfit.study import run_study

    path = _priced(tune_task())
    rec, _, _ = _tune(workspace, path, method="head", objective="classify", model=str(tiny_models["bert"]),
                      max_steps=2, batch_size=8)
    assert rec.result["train_work_s"] > 0 and rec.result["train_unit_cost"]["seconds_per_token"] > 0
    run_study(path, workspace=workspace)
    run_study(path, workspace=workspace, model_names=[f"tuned:{rec.id}"], strategy_names=["classifier"])
    before, after = _assert_same_costs_and_pick(workspace, workspace.runs.list(limit=10))
    tuned = next(r for r in after.rows if r.tune)
    assert tuned.tune["train_time_s"] == 3 * rec.result["train_time_s"]
    assert tuned.tune["train_work_s"] == rec.result["train_work_s"]


def test_a_row_without_calibration_is_priced_from_measured_time_with_the_tolerance():
    from taskfit.costs import DOLLARS, TIME_TOLERANCE, basis_text, row_cost
    from taskfit.types import ReportRow

    timed = ReportRow("zero_shot", "plugin", 0.9, 0.8, 0.95, time_per_1k_s=10.0, price_per_hour=3.6)
    worked = dataclasses.replace(timed, work_time_per_1k_s=5.0, cost_basis="work", cost_uncertainty=0.06)
    t, w = row_cost(timed, DOLLARS), row_cost(worked, DOLLARS)
    assert t.per_query == 10.0 / 1000 / 3600 * 3.6 and w.per_query == 5.0 / 1000 / 3600 * 3.6
    assert basis_text(t, TIME_TOLERANCE) == "measured time ±25%"
    assert basis_text(w, TIME_TOLERANCE) == "work x unit cost ±6%"
    lo, hi = w.bounds(1000, TIME_TOLERANCE)
    assert abs(hi / w.total(1000) - 1.06) < 1e-9 and abs(lo / w.total(1000) - 0.94) < 1e-9
