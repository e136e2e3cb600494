"""Saved optimization runs (table ``optimizations``): reproducible from what is stored, reusable by id."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from taskfit.optimize.candidates import ProgramSpec

JSON_COLUMNS = ("program", "candidates", "report", "config", "versions")


@dataclass
class OptimizationRecord:
    id: str
    created: float
    finished: float | None
    status: str  # "running" (program saved, test comparison pending) or "done"
    task_name: str
    task_path: str
    task_hash: str
    data_hash: str
    model: str
    model_id: str
    budget: int
    calls: int  # calls the search counted against the budget
    calls_sent: int  # of those, calls that reached the model (the rest came from the cache)
    program: dict[str, Any]
    prompt: str
    candidates: list[dict[str, Any]]
    report: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, Any]

    @property
    def spec(self) -> ProgramSpec:
        return ProgramSpec.model_validate(self.program)


class OptimizationStore:
    def __init__(self, eng: Engine):
        self.eng = eng

    def create(self, **fields: Any) -> OptimizationRecord:
        row = {**fields, "id": uuid.uuid4().hex[:8], "created": time.time(), "finished": None}
        row = {k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS else v for k, v in row.items()}
        with self.eng.begin() as conn:
            conn.execute(text(f"INSERT INTO optimizations ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})"),
                         row)
        return self.get(row["id"])  # type: ignore[return-value]

    def finish(self, opt_id: str, report: dict[str, Any]) -> None:
        with self.eng.begin() as conn:
            conn.execute(text("UPDATE optimizations SET status = 'done', finished = :t, report = :r WHERE id = :id"),
                         {"t": time.time(), "r": json.dumps(report, ensure_ascii=False), "id": opt_id})

    def get(self, opt_id: str) -> OptimizationRecord | None:
        """An optimization by id or unique id prefix."""
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT * FROM optimizations WHERE id LIKE :p ORDER BY created DESC"),
                                {"p": opt_id + "%"}).mappings().all()
        return _record(rows[0]) if len(rows) == 1 else None

    def list(self, limit: int = 50) -> list[OptimizationRecord]:
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT * FROM optimizations ORDER BY created DESC LIMIT :n"),
                                {"n": limit}).mappings().all()
        return [_record(r) for r in rows]


def _record(row: Any) -> OptimizationRecord:
    d = {k: json.loads(v) if k in JSON_COLUMNS else v for k, v in dict(row).items()}
    return OptimizationRecord(**d)
