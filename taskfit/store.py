"""Runs and their per-example predictions, in SQLite: everything a leaderboard or a review needs, kept."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

from sqlalchemy import Engine, text

from taskfit.db import upsert
from taskfit.types import Footprint, PredictionRow


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


PREDICTION_COLUMNS = ("run_id", "idx", "example_id", "inputs", "target", "output", "answer", "parse_failed", "failed",
                      "error", "score", "metrics", "tokens_in", "tokens_out", "latency_ms", "calls", "cache_hits",
                      "trace", "scoring")
JSON_COLUMNS = {"inputs", "metrics", "trace", "scoring"}


class Store:
    def __init__(self, eng: Engine):
        self.eng = eng

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

    def finish(self, run_id: str) -> None:
        with self.eng.begin() as conn:
            conn.execute(text("UPDATE runs SET status = 'done', finished = :t WHERE id = :id"),
                         {"t": time.time(), "id": run_id})

    def done_ids(self, run_id: str) -> set[str]:
        with self.eng.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT example_id FROM predictions WHERE run_id = :r"), {"r": run_id})}

    def add_predictions(self, rows: list[PredictionRow]) -> None:
        if not rows:
            return
        encoded = [{k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS else v
                    for k, v in ((k, getattr(r, k)) for k in PREDICTION_COLUMNS)} for r in rows]
        with self.eng.begin() as conn:  # one transaction per chunk: a kill loses at most the chunk in flight
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


def _run(row: Any) -> RunRecord:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["versions"] = json.loads(d["versions"])
    return RunRecord(**d)
