"""Bring other stores into a workspace (``taskfit merge-stores``): runs, predictions, the call cache and
tuned-model records written by separate jobs, then the shard runs of one configuration combined into its
complete run.

Rows are matched by their primary key. A row the workspace already holds with the same content is skipped,
so merging a store twice changes nothing; the same key with different content is a conflict, and the merge is
refused before anything is written (one transaction). The complete run built from shards ``0/N .. N-1/N``
carries the complete run's key, so ``taskfit eval`` in the merged workspace reuses it exactly as it would reuse
one unsharded run (no model call), and its leaderboard row is computed from the same predictions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from taskfit import db
from taskfit.errors import TaskfitError

if TYPE_CHECKING:
    from taskfit.workspace import Workspace


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    what: Callable[[dict[str, Any]], str]  # how a message names a row
    volatile: frozenset[str] = frozenset()  # columns that may differ between copies of the same row


def _call_what(r: dict[str, Any]) -> str:
    return f"cached call {r['key'][:16]}... (model {r['model_id']}, {r['kind']})"


# parents before children: a prediction's run, a footprint's run are in place when it is imported
TABLES = (
    Table("calls", ("key",), _call_what, frozenset({"created"})),
    Table("tunes", ("id",), lambda r: f"tuned model tuned:{r['id']}", frozenset({"artifact_dir"})),
    Table("runs", ("id",), lambda r: f"run {r['id']} ({r['strategy']} x {r['model']} on {r['task_name']})"),
    Table("predictions", ("run_id", "example_id"), lambda r: f"prediction for example {r['example_id']!r} of run "
          f"{r['run_id']}"),
    Table("study_runs", ("study", "run_id"), lambda r: f"study {r['study']}'s reuse of run {r['run_id']}",
          frozenset({"created"})),
    Table("estimates", ("run_id",), lambda r: f"cost estimate of run {r['run_id']}", frozenset({"created"})),
    Table("footprints", ("run_id",), lambda r: f"footprint of run {r['run_id']}", frozenset({"created"})),
)


@dataclass
class MergeResult:
    """What a merge did, per table: rows added and identical rows skipped; complete runs built from shards."""

    added: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    combined: list[str] = field(default_factory=list)  # ids of complete runs built from their shards
    notes: list[str] = field(default_factory=list)  # incomplete shard sets, tuned models without their files


def open_source(location: str) -> tuple[Engine, Path | None, str]:
    """A store to merge from: a SQLite file, a workspace folder (its taskfit.db) or a SQLAlchemy URL.
    Returns the engine (migrated to this version's schema), the folder its tuned models sit in, and a name
    for messages."""
    if "://" in location:
        return db.connect(location), None, make_url(location).render_as_string(hide_password=True)
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / "taskfit.db"
    if not path.is_file():  # connecting would create an empty database and merge nothing, silently
        raise TaskfitError(f"{location}: no such store (a SQLite file, a workspace folder with taskfit.db, "
                           "or a database URL)")
    return db.connect(f"sqlite:///{path.resolve()}"), path.resolve().parent, str(path)


def merge_stores(workspace: Workspace, sources: list[str]) -> MergeResult:
    """Import every store in ``sources`` into ``workspace``, then combine complete sets of shard runs.
    Raises TaskfitError naming the store and the row on a conflicting duplicate; nothing is written then (the
    tuned models' folders copied before it stay, unreferenced)."""
    result = MergeResult()
    target = workspace.engine
    opened: list[tuple[Engine, Path | None, str]] = []
    try:
        for location in sources:  # every store is found before anything is read
            opened.append(open_source(location))
            if _same_database(opened[-1][0], target):
                raise TaskfitError(f"{opened[-1][2]} is this workspace's own database: nothing to merge")
        with target.begin() as dst:  # one transaction: a conflict in any store leaves the workspace as it was
            for eng, folder, name in opened:
                with eng.connect() as src:
                    added = {t.name: _merge_table(src, dst, t, name, result) for t in TABLES}
                _place_tuned_folders(dst, added["tunes"], folder, workspace.root / "tuned", result)
            _combine_shards(dst, result)
    finally:
        for eng, _, _ in opened:
            eng.dispose()
    return result


def _same_database(a: Engine, b: Engine) -> bool:
    if a.url.get_backend_name() == b.url.get_backend_name() == "sqlite":
        return Path(a.url.database or "").resolve() == Path(b.url.database or "").resolve()
    return a.url.render_as_string(hide_password=True) == b.url.render_as_string(hide_password=True)


def _merge_table(src: Connection, dst: Connection, table: Table, source: str,
                 result: MergeResult) -> list[tuple[Any, ...]]:
    """Copy ``table``'s new rows from ``src`` to ``dst`` and return their keys; refuse a row whose key ``dst``
    holds with other content."""
    cols = [c for c in _columns(dst, table.name) if c in set(_columns(src, table.name))]
    where = " AND ".join(f"{k} = :{k}" for k in table.key)
    lookup = text(f"SELECT {', '.join(cols)} FROM {table.name} WHERE {where}")
    insert = text(f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})")
    added: list[tuple[Any, ...]] = []
    pending: list[dict[str, Any]] = []
    skipped = 0
    for row in src.execute(text(f"SELECT {', '.join(cols)} FROM {table.name}")).mappings():
        row = dict(row)
        mine = dst.execute(lookup, {k: row[k] for k in table.key}).mappings().first()
        if mine is None:
            added.append(tuple(row[k] for k in table.key))
            pending.append(row)
            if len(pending) == 500:  # predictions carry traces: a large store is copied a chunk at a time
                dst.execute(insert, pending)
                pending.clear()
            continue
        differ = [c for c in cols if c not in table.volatile and not _same(table.name, c, mine[c], row[c])]
        if differ:
            raise TaskfitError(f"{source}: {table.what(row)} is already in this workspace with different "
                               f"{', '.join(differ)}; nothing was merged (the two stores disagree about it: "
                               "keep one, or merge into a fresh workspace)")
        skipped += 1
    if pending:
        dst.execute(insert, pending)
    result.added[table.name] = result.added.get(table.name, 0) + len(added)
    result.skipped[table.name] = result.skipped.get(table.name, 0) + skipped
    return added


def _same(table: str, column: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if table == "calls" and column == "response":  # the time a call took is not its content
        try:
            ja, jb = json.loads(a), json.loads(b)
        except (TypeError, ValueError):
            return False
        if isinstance(ja, dict) and isinstance(jb, dict):
            ja.pop("latency_ms", None)
            jb.pop("latency_ms", None)
            return ja == jb
    if isinstance(a, float) and isinstance(b, float):  # a REAL round-tripped through another database
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return False


def _columns(conn: Connection, table: str) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns(table)]


def _place_tuned_folders(dst: Connection, tunes: list[tuple[Any, ...]], folder: Path | None, mine: Path,
                         result: MergeResult) -> None:
    """The files of the tuned models just imported, copied into this workspace's ``tuned/<id>`` (from where the
    record points, else from the source workspace's ``tuned/<id>``): a job's scratch folder may go once merged."""
    for (tid,) in tunes:
        row = dst.execute(text("SELECT id, artifact_dir FROM tunes WHERE id = :id"), {"id": tid}).mappings().one()
        there = next((p for p in (Path(row["artifact_dir"]), folder / "tuned" / tid if folder else None)
                      if p is not None and p.is_dir()), None)
        if there is None:
            result.notes.append(f"tuned:{tid}: its files are neither at {row['artifact_dir']} nor in the source "
                                f"store's tuned/ folder; copy them to {mine / tid} before evaluating the model")
            continue
        here = mine / row["id"]
        if not here.exists():
            shutil.copytree(there, here)
        dst.execute(text("UPDATE tunes SET artifact_dir = :d WHERE id = :id"), {"d": str(here), "id": row["id"]})


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:8]


def _combine_shards(dst: Connection, result: MergeResult) -> None:
    """Build the complete run of every configuration whose shards are all here and finished."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    rows = dst.execute(text("SELECT * FROM runs WHERE config LIKE :p ORDER BY created"),
                       {"p": '%"complete_key"%'}).mappings()
    for row in rows:
        shard = json.loads(row["config"]).get("shard")
        if not shard or row["status"] != "done":
            continue
        groups.setdefault(shard["complete_key"], {})[shard["index"]] = dict(row)  # the newest of an index wins
        counts[shard["complete_key"]] = shard["count"]
    for key, shards in groups.items():
        count = counts[key]
        if dst.execute(text("SELECT 1 FROM runs WHERE key = :k AND status = 'done'"), {"k": key}).first():
            continue  # combined before (or run unsharded here): eval reuses that one
        first = shards[min(shards)]
        if len(shards) < count:
            missing = ", ".join(f"{i}/{count}" for i in range(count) if i not in shards)
            result.notes.append(f"{first['strategy']} x {first['model']} on {first['task_name']}: shard(s) {missing} "
                                "not here (or not finished); merge their stores to complete the run")
            continue
        parts = [shards[i] for i in range(count)]
        # the same shards give the same complete run in any workspace, so merged stores merge again cleanly;
        # the complete runs of one array of jobs (the same shard studies) form one study, which starts when its
        # last shard finished: `taskfit report` finds it as the latest study, without the shard runs
        run_id = _digest(p["id"] for p in parts)
        config = json.loads(first["config"])
        del config["shard"]
        done = max(p["finished"] or p["created"] for p in parts)
        complete = {**first, "id": run_id, "key": key, "config": json.dumps(config), "created": done, "finished": done,
                    "study": _digest(sorted({p["study"] for p in parts})), "n_total": sum(p["n_total"] for p in parts)}
        dst.execute(text(f"INSERT INTO runs ({', '.join(complete)}) VALUES ({', '.join(':' + c for c in complete)})"),
                    complete)
        pcols = _columns(dst, "predictions")
        selected = ", ".join("CAST(:run AS TEXT)" if c == "run_id" else c for c in pcols)
        for p in parts:
            dst.execute(text(f"INSERT INTO predictions ({', '.join(pcols)}) SELECT {selected} FROM predictions "
                             "WHERE run_id = :src"), {"run": run_id, "src": p["id"]})
        result.combined.append(run_id)
