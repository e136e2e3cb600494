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
