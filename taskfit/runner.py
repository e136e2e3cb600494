"""Evaluate strategy x model arms on a split: predict in chunks, score, store, resume where a run stopped.

A run's identity (``key``) is a hash of everything that determines its results: the task file, the data,
the strategy and model settings, the split and the limit. Running the same command after a crash resumes
the unfinished run with that key; finished examples are not predicted again and finished model calls come
from the cache, so the resumed run ends with the same predictions as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from taskfit.backends import Backend, backends
from taskfit.cache import CallCache
from taskfit.dataset import Dataset, Example
from taskfit.lm import LM
from taskfit.metrics import build_metric
from taskfit.prompts import prompt_parts
from taskfit.store import RunRecord, Store
from taskfit.strategies import StrategyContext, strategies
from taskfit.taskfile import ModelSpec, StrategySpec, Task

CHUNK = 32  # examples per commit: a kill loses at most this much work (its model calls stay cached)


@dataclass(frozen=True)
class Arm:
    strategy: StrategySpec
    model: ModelSpec

    @property
    def name(self) -> str:
        return f"{self.strategy.label()} x {self.model.label()}"


ProgressFn = Callable[[Arm, int, int], None]  # (arm, done, total)


def package_versions(where: Path | None = None) -> dict[str, str]:
    """Python and package versions, plus the git commit of the task's folder when it is in a repository."""
    out = {"python": platform.python_version()}
    if where is not None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
            if commit.returncode == 0:
                out["git_commit"] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    for pkg in ("taskfit", "torch", "transformers", "sentence-transformers", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _option_files(task: Task, options: dict[str, Any]) -> dict[str, str]:
    """Hashes of files a strategy's options name (a document collection...): editing one changes the run."""
    out = {}
    for key, value in options.items():
        if isinstance(value, str) and 0 < len(value) < 500 and "\n" not in value:
            path = task.resolve(value)
            if path.is_file():
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def run_key(task: Task, dataset: Dataset, arm: Arm, split: str, limit: int | None, mode: str) -> str:
    payload = {"task": task.config_hash, "data": dataset.hash, "strategy": arm.strategy.model_dump(),
               "files": _option_files(task, arm.strategy.options),
               "model": arm.model.model_dump(exclude={"price_per_hour"}),  # a price changes no prediction
               "split": split, "limit": limit, "mode": mode}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class BackendPool:
    """Load each model once per process, however many strategies use it."""

    def __init__(self) -> None:
        self._loaded: dict[str, Backend] = {}

    def get(self, spec: ModelSpec) -> Backend:
        key = json.dumps(spec.model_dump(), sort_keys=True)
        if key not in self._loaded:
            self._loaded[key] = backends.get(spec.backend)(spec)
        return self._loaded[key]


def resolve_mode(task: Task, backend: Backend) -> str:
    mode = task.config.output_mode
    if mode == "auto":
        return "score" if task.config.labels and backend.supports_score else "generate"
    return mode


def evaluate(task: Task, dataset: Dataset, arms: list[Arm], *, split: str, limit: int | None, store: Store,
             cache: CallCache, pool: BackendPool | None = None, progress: ProgressFn | None = None,
             study: str | None = None) -> list[RunRecord]:
    """Run every arm on ``split`` (first ``limit`` rows) and return the finished run records."""
    pool = pool or BackendPool()
    study = study or uuid.uuid4().hex[:8]
    examples = dataset.split(split)[:limit] if limit else dataset.split(split)
    c = task.config
    metric_fns = [(m.name, build_metric(m.name, m.options)) for m in c.metrics]
    records = []
    for arm in arms:
        backend = pool.get(arm.model)
        mode = resolve_mode(task, backend)
        key = run_key(task, dataset, arm, split, limit, mode)
        run = store.resumable(key) or store.create_run(
            key=key, study=study, task_name=c.name, task_path=str(task.path), task_hash=task.config_hash,
            data_hash=dataset.hash, strategy=arm.strategy.label(), model=arm.model.label(), model_id=backend.model_id,
            split=split, n_total=len(examples), versions=package_versions(task.root),
            config={"task": c.model_dump(), "strategy": arm.strategy.model_dump(), "model": arm.model.model_dump(),
                    "mode": mode, "limit": limit, "backend": backend.describe()})
        ctx = StrategyContext(task=task, parts=prompt_parts(task), train=dataset.splits.get("train", []), mode=mode,
                              seed=c.data.seed)
        strategy = strategies.get(arm.strategy.name)(arm.strategy, ctx)
        lm = LM(backend, cache)
        done = store.done_ids(run.id)
        todo = [(i, ex) for i, ex in enumerate(examples) if ex.id not in done]
        if progress:
            progress(arm, len(done), len(examples))
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            preds = strategy.predict([ex for _, ex in chunk], lm)
            store.add_predictions([_row(run.id, i, ex, p, metric_fns, c.inputs) for (i, ex), p in zip(chunk, preds, strict=True)])
            if progress:
                progress(arm, len(done) + start + len(chunk), len(examples))
        store.finish(run.id)
        records.append(store.run(run.id))
    return records


def _row(run_id: str, idx: int, ex: Example, p, metric_fns, inputs: list[str]) -> dict[str, Any]:
    scores = {name: (0.0 if p.answer is None else float(fn(p.answer, ex))) for name, fn in metric_fns}
    # strategy-level measurements (e.g. retrieval recall@k) sit beside the task's metrics
    scores.update({k: float(v) for k, v in p.details.get("metrics", {}).items()})
    trace = p.trace
    return {
        "run_id": run_id, "idx": idx, "example_id": ex.id, "inputs": {k: ex.fields.get(k) for k in inputs},
        "target": ex.target, "output": p.output, "answer": p.answer, "parse_failed": int(p.parse_failed),
        "failed": int(p.failed), "error": trace.error, "score": scores[metric_fns[0][0]], "metrics": scores,
        "tokens_in": int(trace.total("tokens_in")), "tokens_out": int(trace.total("tokens_out")),
        "latency_ms": trace.total("latency_ms"), "calls": trace.n_calls, "cache_hits": trace.cache_hits,
        "trace": {"calls": trace.calls, "details": p.details},
    }
