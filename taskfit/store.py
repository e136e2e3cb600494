"""Runs and their per-example predictions, in SQLite: everything a leaderboard or a review needs, kept.

A running run has one writer. It holds the run's lease (``runs.owner``, ``runs.heartbeat``), taken with a
conditional UPDATE and refreshed while it works; a second process with the same configuration resumes the
run only once that lease is dead (expired, or its process gone from this host), and otherwise starts its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

from sqlalchemy import Engine, text

from taskfit.db import upsert
from taskfit.errors import TaskfitError
from taskfit.types import Footprint, PredictionRow

LEASE_S = 120.0  # a lease not refreshed for this long belongs to a dead writer; refreshed every LEASE_S / 4
logger = logging.getLogger("taskfit.store")


@dataclass
class RunRecord:
    id: str
    key: str
    study: str
    created: float
    finished: float | None
    status: str
    task_name: str
    task_path: str
    task_hash: str
    data_hash: str
    strategy: str
    model: str
    model_id: str | None
    split: str
    n_total: int
    config: dict[str, Any]
    versions: dict[str, Any]
    owner: str | None = None  # the writer holding the lease while the run is running (host:pid:token)
    heartbeat: float | None = None  # when it last renewed the lease


@dataclass(frozen=True)
class Claim:
    """A run this process now writes, and what it says about how it got it (None for a plain new run)."""

    run: RunRecord
    owner: str
    note: str | None


class LeaseLost(TaskfitError):
    """Another process took over the run (this one stopped renewing its lease in time)."""


PREDICTION_COLUMNS = ("run_id", "idx", "example_id", "inputs", "target", "output", "answer", "parse_failed", "failed",
                      "error", "score", "metrics", "tokens_in", "tokens_out", "latency_ms", "calls", "cache_hits",
                      "trace", "scoring")
JSON_COLUMNS = {"inputs", "metrics", "trace", "scoring"}


class Store:
    def __init__(self, eng: Engine, lease_s: float = LEASE_S):
        self.eng = eng
        self.lease_s = lease_s

    def latest(self, key: str, *, legacy: str | None = None, study: str | None = None) -> RunRecord | None:
        """The newest run with this configuration, finished or not. Runs stored under the ``legacy`` key (the
        identity as it was computed before) are re-keyed to ``key`` on the way: found once, found from then on,
        whatever the old rule would say. A finished run reused by a new ``study`` is recorded as one of its runs."""
        with self.eng.begin() as conn:
            row = self._newest(conn, key)
            if row is None and legacy and legacy != key:
                conn.execute(text("UPDATE runs SET key = :k WHERE key = :old"), {"k": key, "old": legacy})
                row = self._newest(conn, key)
            if row is not None and study and row["status"] == "done" and row["study"] != study:
                upsert(conn, "study_runs", [{"study": study, "run_id": row["id"], "created": time.time()}],
                       key=("study", "run_id"))
        return _run(row) if row is not None else None

    @staticmethod
    def _newest(conn: Any, key: str) -> Any:
        return conn.execute(text("SELECT * FROM runs WHERE key = :k ORDER BY created DESC LIMIT 1"),
                            {"k": key}).mappings().first()

    def reused(self, task_name: str) -> list[tuple[str, str, float]]:
        """(study, run id, when) for each finished run of the task that a later study reused."""
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT s.study, s.run_id, s.created FROM study_runs s JOIN runs r "
                                     "ON r.id = s.run_id WHERE r.task_name = :t"), {"t": task_name}).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def reused_in(self, study: str) -> set[str]:
        """Ids of the finished runs ``study`` reused (its own runs carry its id)."""
        with self.eng.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT run_id FROM study_runs WHERE study = :s"), {"s": study})}
    def claim(self, key: str, **fields: Any) -> Claim:
        """The run this process writes for configuration ``key``: the newest unfinished one whose writer is
        gone (its lease taken over atomically), else a new run created with ``fields`` and leased to us."""
        me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = time.time()
        with self.eng.connect() as conn:
            found = conn.execute(text("SELECT id, owner, heartbeat FROM runs WHERE key = :k AND status = 'running' "
                                      "ORDER BY created DESC"), {"k": key}).all()
        busy = []
        for run_id, owner, heartbeat in found:
            why = self._dead(owner, heartbeat, now)
            if why is None:
                busy.append(f"{run_id} (writer {owner})")
                continue
            # compare-and-set on the lease we saw: of processes racing for one dead run, exactly one wins
            with self.eng.begin() as conn:
                won = conn.execute(text(
                    "UPDATE runs SET owner = :me, heartbeat = :now WHERE id = :id AND status = 'running' "
                    "AND COALESCE(owner, '') = :seen AND COALESCE(heartbeat, 0) = :beat"),
                    {"me": me, "now": now, "id": run_id, "seen": owner or "", "beat": heartbeat or 0}).rowcount
            if won == 1:
                return Claim(self.get(run_id), me, f"resuming run {run_id}: {why}")  # type: ignore[arg-type]
            busy.append(f"{run_id} (taken over by another process just now)")
        run = self.create(key=key, **fields, owner=me, heartbeat=now)
        note = (f"starting run {run.id}: another live process is writing run {', '.join(busy)} of this "
                "configuration") if busy else None
        return Claim(run, me, note)

    def _dead(self, owner: str | None, heartbeat: float | None, now: float) -> str | None:
        """Why the lease (owner, heartbeat) no longer protects its run, or None while its writer lives."""
        if owner is None or heartbeat is None:
            return "it was stopped before it finished"
        if now - heartbeat > self.lease_s:
            return f"its writer {owner} has not renewed its lease for {now - heartbeat:.0f} s"
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        # a writer on this host that was killed (kill -9, a crash) is seen at once, not after the lease expires
        if host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid)):
            return f"its writer {owner} is no longer running"
        return None

    @contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Renew ``claim``'s lease in a background thread until the block ends, then give it up (a run left
        unfinished is resumed at once by the next process)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 4):
                try:
                    with self.eng.begin() as conn:
                        _renew(conn, claim)
                except LeaseLost:
                    return  # the next chunk's write says so
                except Exception:  # a database hiccup: the next renewal tries again, well within the lease
                    logger.exception("could not renew the lease on run %s", claim.run.id)

        thread = threading.Thread(target=renew, name=f"lease-{claim.run.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with self.eng.begin() as conn:
                conn.execute(text("UPDATE runs SET owner = NULL, heartbeat = NULL WHERE id = :id AND owner = :me"),
                             {"id": claim.run.id, "me": claim.owner})

    def create(self, **fields: Any) -> RunRecord:
        run_id = uuid.uuid4().hex[:8]
        fields = {**fields, "id": run_id, "created": time.time(), "finished": None, "status": "running"}
        row = {k: json.dumps(v) if k in ("config", "versions") else v for k, v in fields.items()}
        cols = ", ".join(row)
        with self.eng.begin() as conn:
            conn.execute(text(f"INSERT INTO runs ({cols}) VALUES ({', '.join(':' + c for c in row)})"), row)
        return self.get(run_id)  # type: ignore[return-value]

    def set_model_id(self, run_id: str, model_id: str) -> None:
        with self.eng.begin() as conn:
            conn.execute(text("UPDATE runs SET model_id = :m WHERE id = :id"), {"m": model_id, "id": run_id})

    def finish(self, run_id: str, claim: Claim | None = None) -> None:
        """Mark the run done; with ``claim``, only while its lease is still ours."""
        with self.eng.begin() as conn:
            if claim is not None:
                _renew(conn, claim)
            conn.execute(text("UPDATE runs SET status = 'done', finished = :t, owner = NULL, heartbeat = NULL "
                              "WHERE id = :id"), {"t": time.time(), "id": run_id})

    def done_ids(self, run_id: str) -> set[str]:
        with self.eng.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT example_id FROM predictions WHERE run_id = :r"), {"r": run_id})}

    def add_predictions(self, rows: list[PredictionRow], claim: Claim | None = None) -> None:
        """Store ``rows``; with ``claim``, in the same transaction as renewing its lease, so nothing is
        written once another process has taken the run over (LeaseLost)."""
        if not rows:
            return
        encoded = [{k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS else v
                    for k, v in ((k, getattr(r, k)) for k in PREDICTION_COLUMNS)} for r in rows]
        with self.eng.begin() as conn:  # one transaction per chunk: a kill loses at most the chunk in flight
            if claim is not None:
                _renew(conn, claim)
            upsert(conn, "predictions", encoded, key=("run_id", "example_id"))

    def predictions(self, run_id: str, with_trace: bool = True) -> list[PredictionRow]:
        cols = [c for c in PREDICTION_COLUMNS if with_trace or c != "trace"]
        with self.eng.connect() as conn:
            rows = conn.execute(text(f"SELECT {', '.join(cols)} FROM predictions WHERE run_id = :r ORDER BY idx"),
                                {"r": run_id}).mappings().all()
        return [PredictionRow(**{k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in r.items()})
                for r in rows]

    def set_footprint(self, run_id: str, footprint: Footprint) -> None:
        """Keep what serving the run's model costs (a new measurement replaces the old)."""
        with self.eng.begin() as conn:
            upsert(conn, "footprints", [{"run_id": run_id, "created": time.time(), **asdict(footprint)}],
                   key=("run_id",))

    def footprints(self, run_ids: list[str]) -> dict[str, Footprint]:
        """The measured footprints of those of ``run_ids`` that have one."""
        if not run_ids:
            return {}
        names = {f"r{i}": r for i, r in enumerate(run_ids)}
        cols = [f.name for f in dataclass_fields(Footprint)]
        with self.eng.connect() as conn:
            rows = conn.execute(text(f"SELECT run_id, {', '.join(cols)} FROM footprints "
                                     f"WHERE run_id IN ({', '.join(':' + k for k in names)})"), names).mappings().all()
        return {r["run_id"]: Footprint(**{k: r[k] for k in cols}) for r in rows}

    def get(self, run_id: str) -> RunRecord | None:
        """A run by id or unique id prefix."""
        with self.eng.connect() as conn:
            prefix = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")  # literal, not wildcards
            rows = conn.execute(text("SELECT * FROM runs WHERE id LIKE :p ESCAPE '\\' ORDER BY created DESC"),
                                {"p": prefix + "%"}).mappings().all()
        return _run(rows[0]) if len(rows) == 1 else None

    def list(self, limit: int = 50) -> list[RunRecord]:
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT * FROM runs ORDER BY created DESC LIMIT :n"), {"n": limit}).mappings().all()
        return [_run(r) for r in rows]

    def progress(self, run_id: str) -> int:
        with self.eng.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM predictions WHERE run_id = :r"), {"r": run_id}).scalar_one()


def _renew(conn: Any, claim: Claim) -> None:
    """Refresh ``claim``'s lease, or raise LeaseLost when the run is no longer ours."""
    held = conn.execute(text("UPDATE runs SET heartbeat = :now WHERE id = :id AND owner = :me AND status = 'running'"),
                        {"now": time.time(), "id": claim.run.id, "me": claim.owner}).rowcount
    if held != 1:
        raise LeaseLost(f"run {claim.run.id} was taken over by another process (this one did not renew its lease "
                        "in time); stopping, with the examples finished so far stored")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _run(row: Any) -> RunRecord:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["versions"] = json.loads(d["versions"])
    return RunRecord(**d)
