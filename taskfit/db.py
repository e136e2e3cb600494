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
    ("005_tunes", """
        CREATE TABLE tunes (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            created REAL NOT NULL,
            finished REAL,
            status TEXT NOT NULL,
            task_name TEXT NOT NULL,
            task_path TEXT NOT NULL,
            method TEXT NOT NULL,
            objective TEXT NOT NULL,
            base_model TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            seed INTEGER NOT NULL,
            spec TEXT NOT NULL,
            versions TEXT NOT NULL,
            artifact_dir TEXT NOT NULL,
            result TEXT NOT NULL
        )"""),
    # Human review, append-only (the latest verdict wins): kind 'label' judges one answer (verdict correct |
    # incorrect); kind 'pair' compares run A's answer with run B's on the same example (verdict a | b | tie).
    ("009_reviews", """
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            task_name TEXT NOT NULL,
            example_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            answer TEXT,
            answer_key TEXT NOT NULL,
            other_run_id TEXT,
            other_answer TEXT,
            verdict TEXT NOT NULL,
            comment TEXT NOT NULL,
            created REAL NOT NULL
        )"""),
    # `taskfit serve` conversation memory: one row per message, in order within a conversation
    ("007_conversations", """
        CREATE TABLE conversations (
            conversation_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (conversation_id, seq)
        )"""),
    # `taskfit serve` request log: one row per chat request, refused and failed ones included
    ("008_requests", """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            task_name TEXT NOT NULL,
            strategy TEXT NOT NULL,
            model TEXT NOT NULL,
            conversation_id TEXT,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            stream INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            queue_ms REAL NOT NULL,
            tokens_in INTEGER NOT NULL,
            tokens_out INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            cache_hits INTEGER NOT NULL,
            tool_calls INTEGER NOT NULL,
            input TEXT,
            output TEXT,
            error TEXT
        )"""),
    # `taskfit optimize`: the winning prompt program (usable as `optimized:<id>`), its prompt as text, every
    # candidate's dev scores, and the held-out comparison with the baseline
    ("006_optimizations", """
        CREATE TABLE optimizations (
            id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            finished REAL,
            status TEXT NOT NULL,
            task_name TEXT NOT NULL,
            task_path TEXT NOT NULL,
            task_hash TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            model_id TEXT NOT NULL,
            budget INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            calls_sent INTEGER NOT NULL,
            program TEXT NOT NULL,
            prompt TEXT NOT NULL,
            candidates TEXT NOT NULL,
            report TEXT NOT NULL,
            config TEXT NOT NULL,
            versions TEXT NOT NULL
        )"""),
    # a run's cost estimate (taskfit.estimate) next to what the run actually spent
    ("009_estimates", """
        CREATE TABLE estimates (
            run_id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            estimate TEXT NOT NULL,
            actual TEXT NOT NULL
        )"""),
]


def home() -> Path:
    """Where taskfit keeps its database: $TASKFIT_HOME, else ./.taskfit."""
    return Path(os.environ.get("TASKFIT_HOME") or ".taskfit")


@lru_cache(maxsize=8)
def engine(path: str | None = None) -> Engine:
    db = Path(path) if path else home() / "taskfit.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return connect(f"sqlite:///{db}")


def connect(url: str) -> Engine:
    """A migrated engine on the database at ``url`` (SQLite file or any SQLAlchemy URL)."""
    eng = create_engine(url, future=True)
    if eng.dialect.name == "sqlite":

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
