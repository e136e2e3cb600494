"""Runs, tunes and optimizations share one status scheme (running | done); older databases are migrated."""

from sqlalchemy import text

from taskfit import db
from taskfit.workspace import Workspace


def test_a_database_with_the_old_status_names_is_migrated(tmp_path):
    ws = Workspace.open(tmp_path / "home")
    opt = ws.optimizations.create(status="running", task_name="t", task_path="t.yaml", task_hash="h", data_hash="d",
                                  model="m", model_id="m", budget=1, calls=0, calls_sent=0,
                                  program={"base": "zero_shot"}, prompt="p", candidates=[], report={}, config={},
                                  versions={})
    finished = ws.optimizations.create(status="running", task_name="t", task_path="t.yaml", task_hash="h",
                                       data_hash="d", model="m", model_id="m", budget=1, calls=0, calls_sent=0,
                                       program={"base": "zero_shot"}, prompt="p", candidates=[], report={},
                                       config={}, versions={})
    with ws.engine.begin() as conn:  # as an older taskfit wrote them
        conn.execute(text("UPDATE optimizations SET status = 'searched' WHERE id = :i"), {"i": opt.id})
        conn.execute(text("UPDATE optimizations SET status = 'complete' WHERE id = :i"), {"i": finished.id})
        conn.execute(text("DELETE FROM migrations WHERE name = '012_status_running_done'"))
    db.migrate(ws.engine)
    assert (ws.optimizations.get(opt.id).status, ws.optimizations.get(finished.id).status) == ("running", "done")
    assert {o.status for o in ws.optimizations.list()} == {"running", "done"}
    ws.close()
