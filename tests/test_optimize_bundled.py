"""`taskfit optimize` on the real bundled model (SmolLM2-135M-Instruct), kept small: a slow-tier check that the
search runs end to end within its budget and that the saved prompt evaluates to the same test predictions."""

from pathlib import Path

import pytest
from sqlalchemy import text as sql

from taskfit.optimize.run import optimize
from taskfit.optimize.search import OptimizeConfig
from taskfit.runner import BackendPool, evaluate
from taskfit.study import prepare, select_arms

pytestmark = pytest.mark.slow
SST2 = Path(__file__).resolve().parents[1] / "examples" / "sst2" / "task.yaml"


def test_optimize_sst2_on_the_bundled_model_within_budget(workspace):
    pool = BackendPool(workspace)
    events: list[dict] = []
    config = OptimizeConfig(budget=80, dev_size=16, instructions=1, rounds=1, k=2, demo_sets=1)
    outcome = optimize(SST2, config, workspace=workspace, limit=8, progress=events.append, pool=pool)
    rec = outcome.record
    assert rec.status == "done" and 0 < rec.calls <= 80 and rec.calls_sent == rec.calls  # cold cache
    assert max(e["calls"] for e in events) <= 80
    assert "Sentiment:" in rec.prompt and rec.spec.instruction in rec.prompt
    assert any(e["event"] == "proposed" for e in events)
    test = rec.report["test"]
    assert test["winner"]["n"] == test["baseline"]["n"] == 8
    assert 0 <= test["winner"]["ci_low"] <= test["winner"]["score"] <= test["winner"]["ci_high"] <= 1
    # the saved strategy gives the same answers when evaluated again (all from the call cache)
    task, dataset = prepare(SST2)
    (arm,) = select_arms(task, [f"optimized:{rec.id}"], None)
    store = workspace.runs
    (run,) = evaluate(task, dataset, [arm], split="test", limit=8, workspace=workspace, pool=pool)
    assert run.id == test["winner"]["run_id"]  # the same settings again: the stored run is reused, no call
    answers = [p.answer for p in store.predictions(run.id)]
    with workspace.engine.begin() as conn:  # without that run, the saved strategy is rebuilt and asked again
        conn.execute(sql("DELETE FROM predictions WHERE run_id = :id"), {"id": run.id})
        conn.execute(sql("DELETE FROM runs WHERE id = :id"), {"id": run.id})
    (run,) = evaluate(task, dataset, [arm], split="test", limit=8, workspace=workspace, pool=pool)
    again = store.predictions(run.id)
    assert [p.answer for p in again] == answers
    assert all(p.cache_hits == p.calls for p in again)
