"""The database behind the call cache and the stores (a SQLite file, or PostgreSQL for a team), with named,
append-only migrations.

Each migration runs in one transaction with its row in ``migrations``, and migrating is serialised across
processes (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: transactional DDL under an advisory lock), so processes
opening a fresh store at once all succeed, and a failed migration leaves the store as it was before it.
SQL is written once, in the subset both dialects accept; ``_ddl`` maps the few type names that differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text

# Append only: a released migration is never edited; a schema change is a new (name, sql) entry, where sql
# is one statement or a tuple of statements (applied together, or not at all).
MIGRATIONS: list[tuple[str, str | tuple[str, ...]]] = [
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
    # what scoring a prediction spent on model calls (an LLM judge) and the metrics' reasons, as JSON
    ("010_prediction_scoring", "ALTER TABLE predictions ADD COLUMN scoring TEXT"),
    # a run's cost estimate (taskfit.estimate) next to what the run actually spent
    ("011_estimates", """
        CREATE TABLE estimates (
            run_id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            estimate TEXT NOT NULL,
            actual TEXT NOT NULL
        )"""),
    # one status scheme for runs, tunes and optimizations: running | done
    ("012_status_running_done", (
        "UPDATE runs SET status = 'done' WHERE status = 'complete'",
        "UPDATE optimizations SET status = 'done' WHERE status = 'complete'",
        "UPDATE optimizations SET status = 'running' WHERE status = 'searched'")),
    # `taskfit shrink`: what serving a run's model costs (taskfit.types.Footprint), measured in a fresh process
    ("013_footprints", """
        CREATE TABLE footprints (
            run_id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            precision TEXT NOT NULL,
            size_mb REAL NOT NULL,
            peak_mb REAL NOT NULL,
            ms_per_query REAL NOT NULL,
            load_s REAL NOT NULL,
            queries INTEGER NOT NULL
        )"""),
    # `taskfit baseline set NAME RUN...`: the runs (one per strategy x model row) a team gates candidates on
    ("014_baselines", """
        CREATE TABLE baselines (
            name TEXT NOT NULL,
            run_id TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (name, run_id)
        )"""),
    # a finished run that a later study reused (same identity, nothing to run again): one of that study's runs
    ("015_study_runs", """
        CREATE TABLE study_runs (
            study TEXT NOT NULL,
            run_id TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (study, run_id)
        )"""),
    # a running run's lease: the process writing it (host:pid:token) and when it last said it is alive, so a
    # second process on the same configuration resumes only a run whose writer is gone
    ("016_run_leases", ("ALTER TABLE runs ADD COLUMN owner TEXT", "ALTER TABLE runs ADD COLUMN heartbeat REAL")),
    # the request log's summary counts outcomes and reads latency percentiles through this index
    ("017_requests_outcome_index", "CREATE INDEX requests_outcome ON requests (task_name, outcome, latency_ms)"),
    # seconds per token of a local model's forward pass, decode step or training step, measured once per model,
    # device and thread count (taskfit.calibration): costs price a row's work with them, not its wall time
    ("018_unit_costs", """
        CREATE TABLE unit_costs (
            model_id TEXT NOT NULL,
            device TEXT NOT NULL,
            threads INTEGER NOT NULL,
            kind TEXT NOT NULL,
            seconds_per_token REAL NOT NULL,
            spread REAL NOT NULL,
            repeats INTEGER NOT NULL,
            batch TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (model_id, device, threads, kind)
        )"""),
]


MIGRATION_LOCK = 0x7461736B666974  # PostgreSQL advisory lock key held while migrating ("taskfit")


def connect(url: str) -> Engine:
    """A migrated engine on the database at ``url`` (SQLite file or any SQLAlchemy URL)."""
    sqlite = url.startswith("sqlite")
    eng = create_engine(url, future=True, pool_pre_ping=not sqlite)  # a server may drop idle connections
    if sqlite:

        @event.listens_for(eng, "connect")
        def _pragmas(conn, _record):  # WAL: readers never block the writer; survives kill -9 mid-write
            cur = conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL waits for other openers too
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    migrate(eng)
    return eng


def migrate(eng: Engine) -> None:
    """Apply the migrations this database lacks, one transaction each, one process at a time."""
    if not _pending(eng):
        return
    for name, sql in MIGRATIONS:
        with _migrating(eng) as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)"))
            if conn.execute(text("SELECT 1 FROM migrations WHERE name = :n"), {"n": name}).first():
                continue  # applied before, or by a process that held the lock first
            for statement in (sql,) if isinstance(sql, str) else sql:
                conn.execute(text(_ddl(statement, eng.dialect.name)))
            conn.execute(text("INSERT INTO migrations (name) VALUES (:n)"), {"n": name})


def _pending(eng: Engine) -> bool:
    """Whether any migration is missing (read without a lock: the usual start finds none)."""
    with eng.connect() as conn:
        if not inspect(conn).has_table("migrations"):
            return True
        done = {r[0] for r in conn.execute(text("SELECT name FROM migrations"))}
    return any(name not in done for name, _ in MIGRATIONS)


@contextmanager
def _migrating(eng: Engine) -> Iterator[Connection]:
    """One transaction that holds the database's migration lock; committed when the block ends."""
    with eng.connect() as conn:
        if eng.dialect.name == "sqlite":
            # the driver opens no transaction before DDL, so CREATE TABLE would commit on its own; an explicit
            # BEGIN IMMEDIATE makes the DDL part of the transaction and takes the write lock now (waiting up
            # to busy_timeout for another process's migration)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif eng.dialect.name == "postgresql":  # DDL is transactional; the lock ends with the transaction
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        yield conn
        conn.commit()  # leaving the block without commit (an exception) rolls everything back


def _ddl(statement: str, dialect: str) -> str:
    """A migration statement for ``dialect``: SQLite's spelling is the reference."""
    if dialect == "postgresql":
        statement = statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)  # REAL is 4 bytes there: not a timestamp
    return statement


def upsert(conn: Connection, table: str, rows: Sequence[dict[str, Any]], key: Sequence[str]) -> None:
    """Insert ``rows`` into ``table``, replacing the row with the same ``key`` columns (SQLite >= 3.24 and
    PostgreSQL share this syntax). Rows go in key order, so concurrent writers lock rows in one order."""
    if not rows:
        return
    cols = list(rows[0])
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
           f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")
    conn.execute(text(sql), sorted(rows, key=lambda r: tuple(str(r[k]) for k in key)))
