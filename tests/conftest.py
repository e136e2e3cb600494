"""Shared fixtures: a workspace per test (its own folder and database) and a tiny task on disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep every test request on loopback even where a proxy is configured."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_database_env(monkeypatch):
    """A developer's own database choice never reaches a test's command lines."""
    monkeypatch.delenv("TASKFIT_DB", raising=False)


@pytest.fixture
def workspace(tmp_path):
    """A fresh workspace (SQLite) in the test's folder."""
    from taskfit.workspace import Workspace

    ws = Workspace.open(tmp_path / "home")
    yield ws
    ws.close()


@pytest.fixture
def taskfit_home(workspace, monkeypatch):
    """For command-line tests: $TASKFIT_HOME, the folder of the ``workspace`` fixture, so a test can read
    what a command stored."""
    monkeypatch.setenv("TASKFIT_HOME", str(workspace.root))
    return workspace.root


REVIEWS = [
    ("a great and moving film", "positive"), ("boring and far too long", "negative"),
    ("i loved every minute", "positive"), ("terrible acting throughout", "negative"),
    ("a great cast and a great script", "positive"), ("the plot is a mess", "negative"),
    ("warm , funny and great", "positive"), ("a dull , terrible bore", "negative"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def make_task(tmp_path):
    """Write a small sentiment task using the scripted backend; keyword overrides go into the YAML."""

    def _make(**overrides) -> Path:
        rows = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
        write_jsonl(tmp_path / "data" / "test.jsonl", rows)
        write_jsonl(tmp_path / "data" / "train.jsonl", [{**r, "id": "t" + r["id"]} for r in rows])
        config = {
            "name": "tiny", "description": "sentiment",
            "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
            "inputs": ["text"], "output": "label", "labels": ["negative", "positive"],
            "metrics": ["accuracy"],
            "prompt": {"instruction": "Classify the review.", "input_template": "Review: {{ text }}"},
            "strategies": ["zero_shot", {"name": "few_shot", "k": 2, "selection": "balanced"}],
            "models": [{"backend": "scripted", "name": "fake", "script": {
                "scores": {"great": {"positive": -0.1, "negative": -3.0},
                           "terrible": {"positive": -3.0, "negative": -0.2}},
                "replies": {"great": "Positive.", "terrible": "negative"}, "default": "hmm"}}],
        }
        for key, value in overrides.items():
            config[key] = value
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return _make


@contextmanager
def serving(httpd, on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Run a loopback HTTP server in a background thread for the duration of a test."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        if on_stop:
            on_stop()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- stores on SQLite and on PostgreSQL ------------------------------------------------------------------

PG_URL_ENV = "TASKFIT_TEST_PG_URL"  # e.g. postgresql+psycopg://taskfit@127.0.0.1:5432/postgres
PG_REQUIRED_ENV = "TASKFIT_TEST_PG_REQUIRED"  # set in CI: a missing server fails the tier instead of skipping it


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema of the test server; the schema is dropped after."""
    import os
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = os.environ.get(PG_URL_ENV)
    why = None if url else f"no PostgreSQL server: set ${PG_URL_ENV} (`eval \"$(bash scripts/test_postgres.sh start)\"`)"
    admin = None
    if url:
        try:
            admin = create_engine(url, isolation_level="AUTOCOMMIT")
            admin.connect().close()
        except Exception as e:  # noqa: BLE001 - any connection failure means the server is not there
            why = f"PostgreSQL at ${PG_URL_ENV} is not reachable: {e}"
    if why:
        if os.environ.get(PG_REQUIRED_ENV):
            pytest.fail(why)
        pytest.skip(why)
    schema = "t_" + uuid.uuid4().hex[:12]
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, then a schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def store_workspace(store_url, tmp_path):
    """A workspace on each kind of database ``store_url`` gives."""
    from taskfit.workspace import Workspace

    ws = Workspace.open(tmp_path / "home", url=store_url)
    yield ws
    ws.close()
