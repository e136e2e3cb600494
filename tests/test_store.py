"""A run has one writer: its lease (owner, heartbeat) decides whether a second process on the same
configuration resumes the run or starts its own, on SQLite and on PostgreSQL, with real processes."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback

import pytest
from sqlalchemy import text

from taskfit import runner
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms
from taskfit.workspace import Workspace

FORK = mp.get_context("fork")  # children start at once, without re-importing the test suite


def _evaluate(ws: Workspace, path, **kw):
    task, ds = prepare(path)
    return evaluate(task, ds, select_arms(task, ["zero_shot"], None), split="test", limit=None, workspace=ws, **kw)


def _runs(url: str) -> dict[str, tuple[str, int]]:
    """run id -> (status, predictions stored)."""
    ws = Workspace.open("unused", url=url)
    try:
        with ws.engine.connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(text(
                "SELECT r.id, r.status, (SELECT COUNT(*) FROM predictions p WHERE p.run_id = r.id) FROM runs r"))}
    finally:
        ws.close()


def _child(target, *args) -> None:
    try:
        target(*args)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _slow_eval(url: str, path, start_after: float) -> None:
    time.sleep(start_after)
    runner.CHUNK = 2  # four commits per run, each followed by a pause: the runs overlap in time
    ws = Workspace.open("unused", url=url)
    _evaluate(ws, path, progress=lambda arm, done, total: time.sleep(0.2))
    ws.close()


@pytest.mark.slow  # three processes whose runs overlap for a second or two
def test_concurrent_processes_on_one_configuration_each_write_their_own_run(store_url, make_task):
    path = make_task()
    Workspace.open("unused", url=store_url).engine.dispose()  # migrated before the children race
    procs = [FORK.Process(target=_child, args=(_slow_eval, store_url, path, 0.3 * i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    # each process wrote a run of its own (the second and third found the first's run alive and left it)
    assert sorted(_runs(store_url).values()) == [("done", 8)] * 3


def _killed_mid_run(url: str, path) -> None:
    runner.CHUNK = 3
    ws = Workspace.open("unused", url=url)

    def progress(arm, done, total):
        if done >= 3:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, the lease stays as it was

    _evaluate(ws, path, progress=progress)


def test_a_killed_writers_run_is_resumed_at_once_and_says_so(store_url, make_task, caplog):
    path = make_task()
    Workspace.open("unused", url=store_url).engine.dispose()
    child = FORK.Process(target=_killed_mid_run, args=(store_url, path))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    ((killed, (status, stored)),) = _runs(store_url).items()
    assert status == "running" and stored == 3
    ws = Workspace.open("unused", url=store_url)
    try:
        with caplog.at_level(logging.WARNING, logger="taskfit.runner"):
            (record,) = _evaluate(ws, path)
    finally:
        ws.close()
    assert record.id == killed and record.status == "done" and record.owner is None
    assert f"resuming run {killed}: its writer" in caplog.text and "is no longer running" in caplog.text


def test_a_live_writers_run_is_left_alone_a_taken_over_writer_stops(store_url, make_task, caplog, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK", 3)
    path = make_task()
    first, second = Workspace.open("a", url=store_url), Workspace.open("b", url=store_url)  # engines of their own
    paused, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def pausing(arm, done, total):
        if done > 0 and not go_on.is_set():
            paused.set()
            go_on.wait(60)

    def run_first() -> None:
        try:
            _evaluate(first, path, progress=pausing)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    writer = threading.Thread(target=run_first)
    caplog.set_level(logging.WARNING, logger="taskfit.runner")
    try:
        writer.start()
        assert paused.wait(60)
        (live,) = _runs(store_url)
        (own,) = _evaluate(second, path)  # the first writer is alive: the second starts its own run
        assert own.id != live and own.status == "done"
        assert f"starting run {own.id}: another live process is writing run {live}" in caplog.text
        # a process on another host takes the run over (and then stops renewing): the first writer's next
        # chunk is refused, so the run never has two writers
        with second.engine.begin() as conn:
            conn.execute(text("UPDATE runs SET owner = 'elsewhere:1:x', heartbeat = :t WHERE id = :id"),
                         {"t": time.time() - 3600, "id": live})
        go_on.set()
        writer.join(60)
        assert len(errors) == 1 and f"run {live} was taken over by another process" in str(errors[0])
        assert _runs(store_url)[live] == ("running", 3)
        (reused,) = _evaluate(second, path)  # a finished run of the configuration is reused as it is
        assert reused.id == own.id and _runs(store_url)[live] == ("running", 3)
        with second.engine.begin() as conn:  # without it, the run whose lease expired is resumed
            conn.execute(text("DELETE FROM predictions WHERE run_id = :id"), {"id": own.id})
            conn.execute(text("DELETE FROM runs WHERE id = :id"), {"id": own.id})
        (resumed,) = _evaluate(second, path)
        assert resumed.id == live and _runs(store_url)[live] == ("done", 8)
        assert "its writer elsewhere:1:x has not renewed its lease for 3600 s" in caplog.text
    finally:
        go_on.set()
        writer.join(60)
        first.close()
        second.close()


FIELDS = dict(study="s", task_name="t", task_path="p", task_hash="h", data_hash="d", strategy="s", model="m",
              model_id=None, split="test", n_total=1, config={}, versions={})


def test_a_held_lease_is_renewed_in_the_background_and_given_up_at_the_end(store_url):
    from taskfit.store import Store

    ws = Workspace.open("unused", url=store_url)
    try:
        store = Store(ws.engine, lease_s=0.4)
        mine = store.claim("k", **FIELDS)
        with store.holding(mine):
            time.sleep(1.0)  # two and a half leases: still ours only because it was renewed meanwhile
            other = Store(ws.engine, lease_s=0.4).claim("k", **FIELDS)
            assert other.run.id != mine.run.id and "another live process is writing run" in other.note
        again = store.claim("k", **FIELDS)  # given up when the block ended: the next writer takes it at once
        assert again.run.id == mine.run.id and again.note == f"resuming run {mine.run.id}: it was stopped before it finished"
    finally:
        ws.close()


def test_of_processes_racing_for_one_dead_run_exactly_one_gets_it(store_url):
    ws = Workspace.open("unused", url=store_url)
    fields = FIELDS
    dead = ws.runs.create(key="k", **fields, owner="elsewhere:1:x", heartbeat=0.0).id
    ws.close()
    barrier, won = FORK.Barrier(4), FORK.Queue()

    def race() -> None:
        w = Workspace.open("unused", url=store_url)
        barrier.wait(30)
        won.put(w.runs.claim("k", **fields).run.id)
        w.close()
        won.close()
        won.join_thread()  # the child ends with os._exit: send what it put first

    procs = [FORK.Process(target=_child, args=(race,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    claimed = [won.get(timeout=5) for _ in procs]
    assert claimed.count(dead) == 1 and len(set(claimed)) == 4
