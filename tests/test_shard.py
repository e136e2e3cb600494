"""Sharded runs (`--shard I/N`) and `taskfit merge-stores`: N jobs with N stores give, merged, the leaderboard
of one unsharded run, and the merged run is reused by `taskfit eval` like one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.errors import TaskfitError
from taskfit.shard import Shard, shard_of

TIMED = ("latency_p50_ms", "time_per_1k_s")  # measured per call: not the same on two runs of anything


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def board(*args) -> list[dict]:
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("[\n"):])


def db(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def task(make_task, tmp_path):
    return make_task(models=[{"backend": "scripted", "name": "fake", "script": {
        "scores": {"great": {"positive": -0.1, "negative": -3.0}, "terrible": {"positive": -3.0, "negative": -0.2}},
        "replies": {"great": "Positive.", "terrible": "negative"}, "default": "hmm",
        "call_log": str(tmp_path / "calls.log")}}])


def calls(tmp_path: Path) -> int:
    log = tmp_path / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def without(rows: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


def test_shard_of_is_a_stable_partition():
    ids = [f"r{i}" for i in range(200)]
    shards = [Shard(i, 3) for i in range(3)]
    assert all(sum(s.owns(x) for s in shards) == 1 for x in ids)  # every row in exactly one shard
    assert {shard_of(x, 3) for x in ids} == {0, 1, 2}
    assert shard_of("r7", 3) == shard_of("r7", 3)  # by id alone: adding rows moves no row
    with pytest.raises(TaskfitError, match="0 <= I < N"):
        Shard.parse("2/2")


def test_merged_shards_give_the_unsharded_leaderboard(task, tmp_path):
    whole = board("--db", db(tmp_path / "whole.db"), "eval", task)
    a = board("--db", db(tmp_path / "a.db"), "eval", task, "--shard", "0/2")
    b = board("--db", db(tmp_path / "b.db"), "eval", task, "--shard", "1/2")
    assert [r["n"] for r in a] != [8, 8] and sum(r["n"] for r in a + b) == 16  # each shard scored part of the rows

    merged = tmp_path / "merged.db"
    res = cli("--db", db(merged), "merge-stores", tmp_path / "a.db", tmp_path / "b.db")
    assert res.exit_code == 0, res.output
    assert res.output.count("combined shards into run") == 2
    sent = calls(tmp_path)
    again = board("--db", db(merged), "eval", task)
    assert calls(tmp_path) == sent  # the merged run is reused: not one model call
    # scores, CIs, n, p-values, tokens, calls: the same; the run ids differ (the merged run is another record)
    assert without(again, "run_id", *TIMED) == without(whole, "run_id", *TIMED)
    assert {r["run_id"] for r in again}.isdisjoint(r["run_id"] for r in whole)
    # the report's latest study is the combined runs, not a shard's
    from taskfit.report.data import latest_study_runs
    from taskfit.workspace import Workspace

    ws = Workspace.open(tmp_path / "unused", url=db(merged))
    assert sorted(r.id for r in latest_study_runs(ws.runs, "tiny")) == sorted(r["run_id"] for r in again)
    ws.close()

    before = sqlite3.connect(merged).execute("SELECT COUNT(*) FROM predictions").fetchone()
    res = cli("--db", db(merged), "merge-stores", tmp_path / "a.db", tmp_path / "b.db")  # merging twice
    assert res.exit_code == 0, res.output
    assert "combined" not in res.output and "runs: 0 added, 4 already here" in res.output
    assert sqlite3.connect(merged).execute("SELECT COUNT(*) FROM predictions").fetchone() == before


def test_a_shard_run_is_not_the_complete_run(task, tmp_path):
    store = db(tmp_path / "one.db")
    (part,) = board("--db", store, "eval", task, "--strategy", "zero_shot", "--shard", "0/2")
    (whole,) = board("--db", store, "eval", task, "--strategy", "zero_shot")
    assert whole["n"] == 8 and part["n"] < 8 and whole["run_id"] != part["run_id"]
    config = json.loads(sqlite3.connect(tmp_path / "one.db").execute(
        "SELECT config FROM runs WHERE id = ?", (part["run_id"],)).fetchone()[0])
    assert config["shard"]["index"] == 0 and config["shard"]["count"] == 2
    listing = cli("--db", store, "runs")
    assert f"{part['n']}/{part['n']} (shard 0/2)" in listing.stdout and "8/8 " in listing.stdout


def test_a_missing_shard_is_named_and_nothing_is_combined(task, tmp_path):
    board("--db", db(tmp_path / "a.db"), "eval", task, "--strategy", "zero_shot", "--shard", "0/2")
    res = cli("--db", db(tmp_path / "merged.db"), "merge-stores", tmp_path / "a.db")
    assert res.exit_code == 0, res.output
    assert "shard(s) 1/2 not here" in res.output and "combined" not in res.output


def test_a_conflicting_duplicate_is_refused_naming_the_run(task, tmp_path):
    (row,) = board("--db", db(tmp_path / "a.db"), "eval", task, "--strategy", "zero_shot", "--shard", "0/2")
    copy = tmp_path / "copy.db"
    with sqlite3.connect(tmp_path / "a.db") as src, sqlite3.connect(copy) as conn:
        src.backup(conn)
        conn.execute("UPDATE runs SET split = 'dev' WHERE id = ?", (row["run_id"],))
    merged = tmp_path / "merged.db"
    assert cli("--db", db(merged), "merge-stores", tmp_path / "a.db").exit_code == 0
    res = cli("--db", db(merged), "merge-stores", copy)
    assert res.exit_code != 0
    assert f"run {row['run_id']}" in str(res.exception) and "different split" in str(res.exception)


def test_a_store_that_is_not_there_is_named(workspace, tmp_path):
    from taskfit.store_merge import merge_stores

    with pytest.raises(TaskfitError, match="nope.db: no such store"):
        merge_stores(workspace, [str(tmp_path / "nope.db")])


def test_shards_sharing_one_database_combine_without_a_store_to_import(task, tmp_path):
    shared = db(tmp_path / "shared.db")
    for i in range(3):
        board("--db", shared, "eval", task, "--strategy", "zero_shot", "--shard", f"{i}/3")
    res = cli("--db", shared, "merge-stores")
    assert res.exit_code == 0, res.output
    assert res.output.count("combined shards into run") == 1
    sent = calls(tmp_path)
    (row,) = board("--db", shared, "eval", task, "--strategy", "zero_shot")
    assert row["n"] == 8 and calls(tmp_path) == sent


@pytest.mark.slow  # four `taskfit` processes
def test_the_shard_merge_example_in_docs_cluster_runs(task, tmp_path):
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    block = re.search(r"```bash\n(.*?)```", (root / "docs/cluster.md").read_text(), re.S).group(1)
    shard_line, *rest = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    shim = tmp_path / "bin" / "taskfit"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m taskfit.cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "PYTHONPATH": str(root)}
    env.pop("TASKFIT_HOME", None)
    shards = subprocess.run(["bash", "-ec", f"N=2; for I in 0 1; do {shard_line}; done"], cwd=task.parent, env=env,
                            capture_output=True, text=True, timeout=300)
    assert shards.returncode == 0, shards.stderr
    sent = calls(tmp_path)
    merged = subprocess.run(["bash", "-ec", "\n".join(rest)], cwd=task.parent, env=env, capture_output=True,
                            text=True, timeout=300)
    assert merged.returncode == 0, merged.stderr
    assert "combined shards into run" in merged.stdout and "Leaderboard" in merged.stdout
    assert calls(tmp_path) == sent  # the merged runs were reused


def _tuned(ws, folder_file: str = "adapter.safetensors"):
    rec = ws.tunes.create(key="k1", task_name="tiny", task_path="task.yaml", method="lora", objective="sft",
                          base_model="bundled", data_hash="d", seed=0, spec={"method": "lora"}, versions={})
    (rec.folder / folder_file).write_text("weights")
    ws.tunes.finish(rec.id, {"train_time_s": 1.0})
    return rec


def test_tuned_models_come_with_their_folders(tmp_path):
    from taskfit.store_merge import merge_stores
    from taskfit.workspace import Workspace

    job, home = Workspace.open(tmp_path / "job"), Workspace.open(tmp_path / "home")
    rec = _tuned(job)
    result = merge_stores(home, [str(job.root)])  # a workspace folder: its taskfit.db and its tuned/
    mine = home.tunes.get(rec.id)
    assert result.added["tunes"] == 1 and mine.result == {"train_time_s": 1.0}
    assert mine.folder == home.root / "tuned" / rec.id and (mine.folder / "adapter.safetensors").read_text() == "weights"
    assert merge_stores(home, [str(job.root / "taskfit.db")]).skipped["tunes"] == 1  # again: nothing changes
    job.close()
    home.close()


def test_a_cached_call_with_another_answer_is_refused(tmp_path):
    from sqlalchemy import text

    from taskfit.store_merge import merge_stores
    from taskfit.workspace import Workspace

    stores = [Workspace.open(tmp_path / name) for name in ("a", "b")]
    for ws, answer, ms in zip(stores, ("yes", "no"), (10.0, 20.0), strict=True):
        with ws.engine.begin() as conn:
            for key, reply in (("same", "yes"), ("other", answer)):
                conn.execute(text("INSERT INTO calls VALUES (:k, 'openai:m', 'generate', '{}', :r, 0)"),
                             {"k": key, "r": json.dumps({"texts": [reply], "latency_ms": ms})})
    a, b = stores
    with pytest.raises(TaskfitError, match=r"cached call other.*\(model openai:m, generate\).*different response"):
        merge_stores(a, [str(b.root)])
    with a.engine.connect() as conn:  # refused before anything was written
        assert conn.execute(text("SELECT COUNT(*) FROM calls")).scalar_one() == 2
    for ws in stores:
        ws.close()


def test_run_with_a_shard_scores_its_part_and_leaves_the_report_to_the_merged_store(task, tmp_path, monkeypatch):
    home = tmp_path / "job"
    monkeypatch.setenv("TASKFIT_HOME", str(home))
    res = cli("--db", db(tmp_path / "job.db"), "run", task, "--shard", "1/2", "--no-tune")
    assert res.exit_code == 0, res.output
    with sqlite3.connect(tmp_path / "job.db") as conn:
        totals = {n for (n,) in conn.execute("SELECT n_total FROM runs")}
        shards = {json.loads(c)["shard"]["index"] for (c,) in conn.execute("SELECT config FROM runs")}
    assert totals == {8 - sum(Shard(0, 2).owns(f"r{i}") for i in range(8))} and shards == {1}
    assert "report:" not in res.output and not (home / "reports").exists()


def test_a_bad_shard_is_an_error_naming_the_option(task, tmp_path):
    res = cli("--db", db(tmp_path / "x.db"), "eval", task, "--shard", "3/2")
    assert res.exit_code != 0 and "--shard '3/2'" in str(res.exception)


def test_shards_merge_into_any_database(task, tmp_path, store_url):
    """The merged store may be PostgreSQL (a team's store): the combined run is reused there too."""
    whole = board("--db", db(tmp_path / "whole.db"), "eval", task, "--strategy", "zero_shot")
    for i in range(2):
        board("--db", db(tmp_path / f"{i}.db"), "eval", task, "--strategy", "zero_shot", "--shard", f"{i}/2")
    res = cli("--db", store_url, "merge-stores", tmp_path / "0.db", tmp_path / "1.db")
    assert res.exit_code == 0, res.output
    sent = calls(tmp_path)
    merged = board("--db", store_url, "eval", task, "--strategy", "zero_shot")
    assert calls(tmp_path) == sent
    assert without(merged, "run_id", *TIMED) == without(whole, "run_id", *TIMED)


def test_the_dry_run_of_a_shard_counts_its_rows(task, tmp_path):
    owned = sum(Shard(0, 2).owns(f"r{i}") for i in range(8))
    res = cli("--db", db(tmp_path / "x.db"), "eval", task, "--strategy", "zero_shot", "--dry-run", "--shard", "0/2",
              "--json")
    assert res.exit_code == 0, res.output
    (estimate,) = json.loads(res.stdout[res.stdout.index("[\n"):])
    assert estimate["n"] == owned < 8


def test_two_stores_that_disagree_merge_nothing_and_a_store_is_not_merged_into_itself(task, tmp_path):
    (row,) = board("--db", db(tmp_path / "a.db"), "eval", task, "--strategy", "zero_shot", "--shard", "0/2")
    copy = tmp_path / "copy.db"
    with sqlite3.connect(tmp_path / "a.db") as src, sqlite3.connect(copy) as conn:
        src.backup(conn)
        conn.execute("UPDATE predictions SET answer = 'other' WHERE run_id = ?", (row["run_id"],))
    merged = tmp_path / "merged.db"
    res = cli("--db", db(merged), "merge-stores", tmp_path / "a.db", copy)
    assert res.exit_code != 0 and f"of run {row['run_id']}" in str(res.exception)
    assert "different answer" in str(res.exception)
    assert sqlite3.connect(merged).execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)  # not even a.db's
    res = cli("--db", db(tmp_path / "a.db"), "merge-stores", tmp_path / "a.db")
    assert res.exit_code != 0 and "this workspace's own database" in str(res.exception)
