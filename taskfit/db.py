"""The SQLite database behind the call cache and the run store, with named, append-only migrations."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text

# Append only: a released migration is never edited; a schema change is a new (name, sql) entry.
MIGRATIONS: list[tuple[str, str]] = [
    ("001_calls", """
        CREATE TABLE calls (
            key TEXT PRIMARY KEY,
            model_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            request TEXT NOT NULL,
            response TEXT NOT NULL,
            created REAL NOT NULL
        )"""),
    ("002_runs", """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            study TEXT NOT NULL,
            created REAL NOT NULL,
            finished REAL,
            status TEXT NOT NULL,
            task_name TEXT NOT NULL,
            task_path TEXT NOT NULL,
            task_hash TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            strategy TEXT NOT NULL,
            model TEXT NOT NULL,
            model_id TEXT,
            split TEXT NOT NULL,
            n_total INTEGER NOT NULL,
            config TEXT NOT NULL,
            versions TEXT NOT NULL
        )"""),
    ("003_runs_key_index", "CREATE INDEX runs_key ON runs (key, status)"),
    ("004_predictions", """
        CREATE TABLE predictions (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            example_id TEXT NOT NULL,
            inputs TEXT NOT NULL,
            target TEXT NOT NULL,
            output TEXT,
            answer TEXT,
            parse_failed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            error TEXT,
            score REAL NOT NULL,
            metrics TEXT NOT NULL,
            tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            calls INTEGER NOT NULL,
            cache_hits INTEGER NOT NULL,
            trace TEXT NOT NULL,
            PRIMARY KEY (run_id, example_id)
        )"""),
]


def home() -> Path:
    """Where taskfit keeps its database: $TASKFIT_HOME, else ./.taskfit."""
    return Path(os.environ.get("TASKFIT_HOME") or ".taskfit")


@lru_cache(maxsize=8)
def engine(path: str | None = None) -> Engine:
    db = Path(path) if path else home() / "taskfit.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    eng = create_engine(f"sqlite:///{db}", future=True)

    @event.listens_for(eng, "connect")
    def _pragmas(conn, _record):  # WAL: readers never block the writer; survives kill -9 mid-write
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    migrate(eng)
    return eng


def migrate(eng: Engine) -> None:
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)"))
        done = {r[0] for r in conn.execute(text("SELECT name FROM migrations"))}
        for name, sql in MIGRATIONS:
            if name not in done:
                conn.execute(text(sql))
                conn.execute(text("INSERT INTO migrations (name) VALUES (:n)"), {"n": name})
