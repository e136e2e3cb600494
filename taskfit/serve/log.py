"""The request log of `taskfit serve`: one row per chat request (refused and failed ones too), for review."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

COLUMNS = ("id", "created", "task_name", "strategy", "model", "conversation_id", "status", "outcome", "stream",
           "latency_ms", "queue_ms", "tokens_in", "tokens_out", "calls", "cache_hits", "tool_calls", "input",
           "output", "error")
TEXT_CHARS = 10_000  # a row keeps this much of an input or reply, so each row stays small
ERROR_CHARS = 2_000  # and this much of an error (a summary of its problems is shorter still)


def cut(value: str, limit: int = TEXT_CHARS) -> str:
    """``value``, or its first ``limit`` characters and its full length."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


class RequestLog:
    """Writes and reads the `requests` table."""

    def __init__(self, eng: Engine):
        self.eng = eng

    def add(self, row: dict[str, Any]) -> None:
        """Record one request; missing columns are null (or zero for counts); long texts are stored cut."""
        values = {c: row.get(c) for c in COLUMNS}
        for c in ("queue_ms", "tokens_in", "tokens_out", "calls", "cache_hits", "tool_calls", "stream"):
            values[c] = values[c] or 0
        for c, limit in (("input", TEXT_CHARS), ("output", TEXT_CHARS), ("error", ERROR_CHARS)):
            if values[c] is not None:
                values[c] = cut(str(values[c]), limit)
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
        """Counts by outcome, latency percentiles of answered requests, and token totals.

        Aggregated in the database: a log of a million rows is read as a few numbers, never loaded.
        """
        scope = "task_name = :t" if task_name else "1 = 1"
        params = {"t": task_name}
        with self.eng.connect() as conn:
            outcomes = {o: int(n) for o, n in conn.execute(text(
                f"SELECT outcome, COUNT(*) FROM requests WHERE {scope} GROUP BY outcome ORDER BY outcome"), params)}
            tokens_in, tokens_out = conn.execute(text(
                f"SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0) FROM requests WHERE {scope}"),
                params).one()
            answered = outcomes.get("ok", 0)

            def pct(q: float) -> float | None:
                # the same rank as sorting the answered latencies and taking element int(q * n)
                if not answered:
                    return None
                return conn.execute(text(
                    f"SELECT latency_ms FROM requests WHERE {scope} AND outcome = 'ok' ORDER BY latency_ms "
                    "LIMIT 1 OFFSET :k"), {**params, "k": min(answered - 1, int(q * answered))}).scalar_one()

            p50, p99 = pct(0.5), pct(0.99)
        return {"requests": sum(outcomes.values()), "outcomes": outcomes, "latency_p50_ms": p50,
                "latency_p99_ms": p99, "tokens_in": int(tokens_in), "tokens_out": int(tokens_out)}
