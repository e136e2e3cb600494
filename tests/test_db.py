"""The database under every store, on SQLite and on PostgreSQL: migrations are atomic and serialised across
processes, and processes writing one store at once lose nothing."""

from __future__ import annotations

import multiprocessing as mp
import traceback

import pytest
from sqlalchemy import MetaData, create_engine, text

from taskfit import db
from taskfit.cache import CallCache
from taskfit.store import Store
from taskfit.types import PredictionRow

FORK = mp.get_context("fork")  # children start at once, without re-importing the test suite


def _migrations(url: str) -> list[str]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return sorted(r[0] for r in conn.execute(text("SELECT name FROM migrations")))
    finally:
        eng.dispose()


def _drop_everything(url: str) -> None:
    eng = create_engine(url)
    meta = MetaData()
    meta.reflect(eng)
    meta.drop_all(eng)
    eng.dispose()


def _run_children(target, args_per_child: list[tuple]) -> list[int | None]:
    procs = [FORK.Process(target=target, args=args) for args in args_per_child]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [p.exitcode for p in procs]


def _open_store(url: str, barrier) -> None:
    try:
        barrier.wait(timeout=60)
        eng = db.connect(url)
        with eng.connect() as conn:
            conn.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
        eng.dispose()
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None


def test_processes_opening_a_fresh_store_at_once_all_succeed(store_url):
    every = sorted(name for name, _ in db.MIGRATIONS)
    for _trial in range(3):
        _drop_everything(store_url)
        barrier = FORK.Barrier(4)
        assert _run_children(_open_store, [(store_url, barrier)] * 4) == [0, 0, 0, 0]
        assert _migrations(store_url) == every


def test_a_failed_migration_rolls_back_and_the_store_still_opens(store_url, monkeypatch):
    released = list(db.MIGRATIONS)
    # the first migration lands, then the next one fails
    monkeypatch.setattr(db, "MIGRATIONS", [released[0], ("001b_broken", "INSERT INTO no_such_table (x) VALUES (1)")])
    with pytest.raises(Exception, match="no_such_table"):
        db.connect(store_url)
    monkeypatch.setattr(db, "MIGRATIONS", released)
    db.connect(store_url).dispose()  # before: "table calls already exists" on every later start
    assert _migrations(store_url) == sorted(name for name, _ in released)


def test_a_migration_whose_second_statement_fails_leaves_nothing_behind(store_url, monkeypatch):
    released = list(db.MIGRATIONS)
    db.connect(store_url).dispose()
    broken = ("100_extra", ("CREATE TABLE extra (a INTEGER)", "INSERT INTO no_such_table (x) VALUES (1)"))
    monkeypatch.setattr(db, "MIGRATIONS", [*released, broken])
    with pytest.raises(Exception, match="no_such_table"):
        db.connect(store_url)
    fixed = ("100_extra", ("CREATE TABLE extra (a INTEGER)", "CREATE INDEX extra_a ON extra (a)"))
    monkeypatch.setattr(db, "MIGRATIONS", [*released, fixed])
    db.connect(store_url).dispose()  # the first statement was rolled back with the second: no "extra exists"
    assert "100_extra" in _migrations(store_url)


# -- two processes writing one store -----------------------------------------------------------------------

RUNS_PER_WRITER = 12
ROWS_PER_RUN = 6
SHARED_KEYS = 10  # cache keys both writers put, so their upserts collide


def _prediction(run_id: str, i: int) -> PredictionRow:
    return PredictionRow(run_id=run_id, idx=i, example_id=f"e{i}", inputs={"text": f"row {i}"}, target="t",
                         output="o", answer="a", parse_failed=0, failed=0, error=None, score=1.0,
                         metrics={"accuracy": 1.0}, tokens_in=3, tokens_out=1, latency_ms=1.5, calls=1,
                         cache_hits=0, trace={"calls": []})


def _write(url: str, writer: str, barrier) -> None:
    from taskfit.backends import GenerateRequest

    try:
        eng = db.connect(url)
        store, cache = Store(eng), CallCache(eng)
        barrier.wait(timeout=60)
        for r in range(RUNS_PER_WRITER):
            run = store.create(key=f"{writer}-{r}", study=writer, task_name="t", task_path="t.yaml",
                                   task_hash="h", data_hash="d", strategy="s", model="m", model_id="m", split="test",
                                   n_total=ROWS_PER_RUN, config={}, versions={})
            for i in range(0, ROWS_PER_RUN, 2):  # two chunks per run, as the runner commits them
                store.add_predictions([_prediction(run.id, i), _prediction(run.id, i + 1)])
            request = GenerateRequest(({"role": "user", "content": writer},))
            cache.put_many([(f"{writer}-{r}-{i}", "m", "generate", request, {"texts": [writer]}) for i in range(3)]
                           + [(f"shared-{(r + i) % SHARED_KEYS}", "m", "generate", request, {"texts": [writer]})
                              for i in range(3)])
            store.finish(run.id)
        eng.dispose()
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None


def test_two_processes_writing_one_store_lose_nothing(store_url):
    db.connect(store_url).dispose()
    barrier = FORK.Barrier(2)
    assert _run_children(_write, [(store_url, "a", barrier), (store_url, "b", barrier)]) == [0, 0]
    eng = db.connect(store_url)
    store, cache = Store(eng), CallCache(eng)
    runs = store.list(limit=1000)
    assert len(runs) == 2 * RUNS_PER_WRITER and {r.status for r in runs} == {"done"}
    assert all(store.progress(r.id) == ROWS_PER_RUN for r in runs)
    assert cache.count() == 2 * RUNS_PER_WRITER * 3 + SHARED_KEYS
    mine = cache.get_many([f"{w}-{r}-{i}" for w in "ab" for r in range(RUNS_PER_WRITER) for i in range(3)])
    assert {k: v["texts"][0] for k, v in mine.items()} == {k: k[0] for k in mine} and len(mine) == 72
    eng.dispose()


def test_tune_and_optimization_records_round_trip(store_workspace):
    ws = store_workspace
    fields = {"key": "k", "task_name": "t", "task_path": "t.yaml", "method": "lora", "objective": "sft",
              "base_model": "bundled", "data_hash": "d", "seed": 0, "spec": {"rank": 8}, "versions": {}}
    first = ws.tunes.create(**fields)
    second = ws.tunes.create(**fields)
    ws.tunes.finish(first.id, {"train_time_s": 1.5})
    assert ws.tunes.by_key("k").id == first.id  # a finished model wins over a newer unfinished one
    assert ws.tunes.get(second.id[:6]).status == "running" and ws.tunes.get(first.id).result == {"train_time_s": 1.5}
    assert [t.id for t in ws.tunes.list()] == [second.id, first.id]
    opt = ws.optimizations.create(status="running", task_name="t", task_path="t.yaml", task_hash="h", data_hash="d",
                                  model="m", model_id="m", budget=10, calls=3, calls_sent=2,
                                  program={"base": "zero_shot"}, prompt="p", candidates=[{"key": "c0"}], report={},
                                  config={}, versions={})
    ws.optimizations.finish(opt.id, {"gap": 0.1})
    got = ws.optimizations.get(opt.id[:5])
    assert got.status == "done" and got.report == {"gap": 0.1} and got.candidates == [{"key": "c0"}]
    assert got.created == pytest.approx(opt.created, abs=1e-3)  # a full-precision timestamp on both databases


def test_huge_prompts_are_stored_bounded_and_looked_up_exactly(store_workspace):
    import json

    from taskfit.backends import GenerateRequest
    from taskfit.cache import call_key
    from taskfit.estimate import measure

    cache = store_workspace.cache
    big = "lorem ipsum " * 100_000  # 1.2 MB
    reqs = [GenerateRequest(({"role": "user", "content": big + end},), max_tokens=12) for end in ("A", "B")]
    keys = [call_key("m", "generate", r) for r in reqs]
    assert keys[0] != keys[1]  # the key hashes the whole prompt: the same start with another end is another call
    cache.put_many([(k, "m", "generate", r, {"texts": [end], "tokens_in": 9, "tokens_out": 3, "latency_ms": 1.0})
                    for k, r, end in zip(keys, reqs, "AB", strict=True)])
    assert {k: v["texts"] for k, v in cache.get_many(keys).items()} == {keys[0]: ["A"], keys[1]: ["B"]}
    with store_workspace.engine.connect() as conn:
        stored = [json.loads(r[0]) for r in conn.execute(text("SELECT request FROM calls ORDER BY key"))]
    for row in stored:
        assert len(json.dumps(row)) < 50_000
        assert row["messages"]["truncated"] and row["messages"]["chars"] > 1_200_000
        assert row["max_tokens"] == 12 and row["stop"] == [] and row["tools"] == []
    assert stored[0]["messages"]["sha256"] != stored[1]["messages"]["sha256"]
    assert measure(cache, "m").fill == {12: 0.25}  # the estimator still reads the stored parameters
    small = GenerateRequest(({"role": "user", "content": "hi"},))
    cache.put_many([("k", "m", "generate", small, {"texts": ["x"]})])
    with store_workspace.engine.connect() as conn:
        kept = json.loads(conn.execute(text("SELECT request FROM calls WHERE key = 'k'")).scalar_one())
    assert kept["messages"] == [{"role": "user", "content": "hi"}]  # small requests are kept whole
