"""A run's serving footprint (`taskfit shrink`) is kept with the run and shown by the leaderboard, `--json` and
the report; the scripted model stands in for the measured ones."""

from __future__ import annotations

import pytest
from test_leaderboard_render import printed

from taskfit.leaderboard import render, rows
from taskfit.report import collect, render_html
from taskfit.runner import evaluate
from taskfit.shrink import against_parent
from taskfit.study import prepare, select_arms
from taskfit.types import Footprint

INT8 = Footprint(precision="int8", size_mb=217.4, peak_mb=612.9, ms_per_query=23.46, load_s=1.5, queries=8)
PARENT = Footprint(precision="float32", size_mb=513.1, peak_mb=1187.2, ms_per_query=31.04, load_s=2.5, queries=8)


@pytest.fixture
def measured(make_task, workspace):
    """Two runs of the scripted model, the first measured as a float32 parent, the second as its int8 copy,
    and a third run without a footprint."""
    task, ds = prepare(make_task(strategies=["zero_shot", {"name": "few_shot", "k": 2, "selection": "balanced"},
                                             {"name": "few_shot", "k": 2, "selection": "knn"}]))
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    workspace.runs.set_footprint(runs[0].id, PARENT)
    workspace.runs.set_footprint(runs[1].id, INT8)
    return runs


def test_stored_footprints_reach_the_rows_and_their_json(measured, workspace):
    by_run = {r.run_id: r for r in rows(workspace, measured)}
    parent, copy, other = (by_run[r.id] for r in measured)
    assert (parent.precision, parent.size_mb, parent.serving_peak_mb, parent.ms_per_query) == (
        "float32", 513.1, 1187.2, 31.04)
    assert (copy.precision, copy.size_mb, copy.serving_peak_mb, copy.ms_per_query) == ("int8", 217.4, 612.9, 23.46)
    assert other.precision is other.size_mb is other.serving_peak_mb is other.ms_per_query is None
    j = copy.to_json()
    assert {k: j[k] for k in ("precision", "size_mb", "serving_peak_mb", "ms_per_query")} == {
        "precision": "int8", "size_mb": 217.4, "serving_peak_mb": 612.9, "ms_per_query": 23.46}
    assert other.to_json()["precision"] is None  # every row has the keys; null where nothing was measured


def test_a_new_measurement_replaces_the_old(store_workspace, make_task):
    task, ds = prepare(make_task(strategies=["zero_shot"]))
    (run,) = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=store_workspace)
    store = store_workspace.runs
    assert store.footprints([run.id]) == {} and store.footprints([]) == {}
    store.set_footprint(run.id, PARENT)
    store.set_footprint(run.id, INT8)
    assert store.footprints([run.id, "nope"]) == {run.id: INT8}


def test_the_table_shows_the_footprint_in_details_or_wide_columns(measured, workspace):
    board = rows(workspace, measured)
    lines = printed(render(board), 120)
    assert max(len(line) for line in lines) <= 120
    details = lines[next(i for i, line in enumerate(lines) if line.startswith("Details")):]
    assert any(measured[1].id in line and "int8; 217 MB on disk; peak 613 MB; 23.5 ms/query" in line
               for line in details)
    assert any(measured[0].id in line and "float32; 513 MB on disk; peak 1,187 MB; 31.0 ms/query" in line
               for line in details)
    assert not any(measured[2].id in line for line in details)  # nothing measured: no details row
    wide = "\n".join(printed(render(board, wide=True), 300))
    for header in ("precision", "size MB", "peak MB", "ms/query"):
        assert header in wide
    row = next(line for line in wide.splitlines() if measured[1].id in line)
    assert [c.strip() for c in row.split("│")][-6:-2] == ["int8", "217", "613", "23.5"]


def test_the_report_has_the_footprint_columns(measured, workspace):
    html = render_html(collect(workspace, measured))
    assert "<th>peak MB</th>" in html and "<th>ms / query</th>" in html
    assert '<td class="l">int8</td><td>217</td>' in html and "<td>613</td><td>23.5</td>" in html
    assert '<td class="l">float32</td><td>513</td>' in html and "<td>1,187</td><td>31.0</td>" in html
    plain = render_html(collect(workspace, measured[2:]))
    assert "peak MB" not in plain  # a report without measured rows keeps its columns


def test_against_parent_is_the_paired_test_on_shared_examples(measured, workspace):
    from taskfit.stats import mcnemar_p

    (name, change, p), = against_parent(workspace, measured[0], measured[1:2])
    parent, copy = ({x.example_id: x.score for x in workspace.runs.predictions(r.id)} for r in measured[:2])
    a = [parent[k] for k in sorted(parent)]
    b = [copy[k] for k in sorted(parent)]
    assert name == measured[1].model
    assert change == pytest.approx((sum(b) - sum(a)) / len(a))
    assert p == pytest.approx(mcnemar_p(a, b))

