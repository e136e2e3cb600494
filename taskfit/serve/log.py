"""The request log of `taskfit serve`: one row per chat request (refused and failed ones too), for review."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

COLUMNS = ("id", "created", "task_name", "strategy", "model", "conversation_id", "status", "outcome", "stream",
           "latency_ms", "queue_ms", "tokens_in", "tokens_out", "calls", "cache_hits", "tool_calls", "input",
           "output", "error")


class RequestLog:
    """Writes and reads the `requests` table."""

    def __init__(self, eng: Engine):
        self.eng = eng

    def add(self, row: dict[str, Any]) -> None:
        """Record one request; missing columns are null (or zero for counts)."""
        values = {c: row.get(c) for c in COLUMNS}
        for c in ("queue_ms", "tokens_in", "tokens_out", "calls", "cache_hits", "tool_calls", "stream"):
            values[c] = values[c] or 0
        with self.eng.begin() as conn:
            conn.execute(text(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"),
                         values)

    def recent(self, limit: int = 100, task_name: str | None = None) -> list[dict[str, Any]]:
        """The newest requests first."""
        where = "WHERE task_name = :t" if task_name else ""
        with self.eng.connect() as conn:
            rows = conn.execute(text(f"SELECT * FROM requests {where} ORDER BY created DESC LIMIT :n"),
                                {"n": limit, "t": task_name}).mappings().all()
        return [dict(r) for r in rows]

    def summary(self, task_name: str | None = None) -> dict[str, Any]:
        """Counts by outcome, latency percentiles of answered requests, and token totals."""
        rows = self.recent(limit=1_000_000, task_name=task_name)
        ok = sorted(r["latency_ms"] for r in rows if r["outcome"] == "ok")

        def pct(q: float) -> float | None:
            return ok[min(len(ok) - 1, int(q * len(ok)))] if ok else None

        outcomes: dict[str, int] = {}
        for r in rows:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        return {"requests": len(rows), "outcomes": outcomes, "latency_p50_ms": pct(0.5), "latency_p99_ms": pct(0.99),
                "tokens_in": sum(r["tokens_in"] for r in rows), "tokens_out": sum(r["tokens_out"] for r in rows)}
