"""Evaluate strategy x model arms on a split: predict in chunks, score, store, resume where a run stopped.

A run's identity (``key``) is a hash of everything that determines its results: the task's validated
configuration less the keys that change no prediction (``taskfile.NOT_IDENTITY``: prices, serving, other rows),
the data, the strategy and model settings, the split and the limit. Running the same command again reuses the
finished run with that key (no model call, no new run); after a crash it resumes the unfinished one: finished
examples are not predicted again and finished model calls come from the cache, so the resumed run ends with
the same predictions as an uninterrupted one. A run of one shard of the rows (``taskfit.shard``) has an
identity of its own, derived from the complete run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from contextlib import closing as _closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskfit.backends import Backend, build_backend
from taskfit.calibration import calibrated
from taskfit.dataset import Dataset, Example
from taskfit.lm import LM
from taskfit.metrics import Scored, build_metric, score_batch
from taskfit.prompts import prompt_parts
from taskfit.provenance import package_versions
from taskfit.shard import Shard
from taskfit.store import Claim, RunRecord, Store
from taskfit.strategies import StrategyContext, strategies
from taskfit.taskfile import ModelSpec, StrategySpec, Task
from taskfit.types import PredictionRow

if TYPE_CHECKING:
    from taskfit.workspace import Workspace

CHUNK = 32  # examples per commit: a kill loses at most this much work (its model calls stay cached)
logger = logging.getLogger("taskfit.runner")


@dataclass(frozen=True)
class Arm:
    strategy: StrategySpec
    model: ModelSpec

    @property
    def name(self) -> str:
        return f"{self.strategy.label()} x {self.model.label()}"


ProgressFn = Callable[[Arm, int, int], None]  # (arm, done, total)


def _option_files(task: Task, options: dict[str, Any]) -> dict[str, str]:
    """Hashes of files a strategy's options name (a document collection...): editing one changes the run."""
    out = {}
    for key, value in options.items():
        if isinstance(value, str) and 0 < len(value) < 500 and "\n" not in value:
            path = task.resolve(value)
            if path.is_file():
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def run_key(task: Task, dataset: Dataset, arm: Arm, split: str, limit: int | None, mode: str, *,
            legacy: bool = False) -> str:
    """A run's identity; ``legacy``: as it was computed before the task's part was its validated configuration
    (``Task.legacy_hash``, the file's text), to find runs stored then."""
    payload = {"task": task.legacy_hash if legacy else task.config_hash, "data": dataset.hash,
               "strategy": arm.strategy.model_dump(), "files": _option_files(task, arm.strategy.options),
               "model": arm.model.model_dump(exclude={"price_per_hour"}),  # a price changes no prediction
               "split": split, "limit": limit, "mode": mode}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class BackendPool:
    """Load each model once per process, however many strategies use it; tuned models are found in
    ``workspace``."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace
        self._loaded: dict[str, Backend] = {}

    def get(self, spec: ModelSpec) -> Backend:
        key = json.dumps(spec.model_dump(), sort_keys=True)
        if key not in self._loaded:
            self._loaded[key] = build_backend(spec, self.workspace)
        return self._loaded[key]

    def close(self) -> None:
        """Close the backends that hold something outside this process (connections, adapters on a server)."""
        for backend in self._loaded.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        self._loaded.clear()


def resolve_mode(task: Task, backend: Backend) -> str:
    prepare = getattr(backend, "prepare_labels", None)
    if task.config.labels and prepare is not None:  # a server checks its scoring path against the label set
        from taskfit.answering import label_groups

        prepare(label_groups(task.config, prompt_parts(task).response_prefix))
    mode = task.config.output_mode
    if mode == "auto":
        return "score" if task.config.labels and backend.supports_score else "generate"
    return mode


def evaluate(task: Task, dataset: Dataset, arms: list[Arm], *, split: str, limit: int | None, workspace: Workspace,
             pool: BackendPool | None = None, progress: ProgressFn | None = None,
             study: str | None = None, on_run: Callable[[RunRecord], None] | None = None,
             shard: Shard | None = None) -> list[RunRecord]:
    """Run every arm on ``split`` (first ``limit`` rows; of those, only ``shard``'s), storing runs, predictions
    and model calls in ``workspace``, and return the finished run records; ``on_run`` is called with each as it
    finishes (an experiment tracker exports it)."""
    if pool is None:  # a pool of its own is closed when the arms are done
        with _closing(BackendPool(workspace)) as own:
            return evaluate(task, dataset, arms, split=split, limit=limit, workspace=workspace, pool=own,
                            progress=progress, study=study, on_run=on_run, shard=shard)
    store: Store = workspace.runs
    study = study or uuid.uuid4().hex[:8]
    examples = dataset.split(split)[:limit] if limit else dataset.split(split)
    # (position in the split, example): a shard keeps the positions, so merged shards list rows in split order
    numbered = [(i, ex) for i, ex in enumerate(examples) if shard is None or shard.owns(ex.id)]
    c = task.config
    metric_fns = [(m.name, task.metric_objects.get(m.name) or build_metric(m.name, m.options, workspace))
                  for m in c.metrics]
    records = []
    for arm in arms:
        backend = pool.get(arm.model)
        calibrated(workspace.unit_costs, backend)  # once per model, device and thread count: costs price work
        lm = LM(backend, workspace.cache)
        mode = resolve_mode(task, backend)
        key = run_key(task, dataset, arm, split, limit, mode)
        # shard runs have no legacy identity: they did not exist when it was the rule
        legacy = run_key(task, dataset, arm, split, limit, mode, legacy=True) if shard is None else None
        sharding = {} if shard is None else {"shard": shard.record(key)}
        key = key if shard is None else shard.key(key)
        # the same settings scored before: a finished run is reused as it is; an unfinished one is resumed when
        # its writer is gone (its lease, Store.claim), else this process starts a run of its own
        found = store.latest(key, legacy=legacy, study=study)
        fields = dict(
            key=key, study=study, task_name=c.name, task_path=str(task.path), task_hash=task.config_hash,
            data_hash=dataset.hash, strategy=arm.strategy.label(), model=arm.model.label(), model_id=backend.model_id,
            split=split, n_total=len(numbered), versions=package_versions(task.root),
            config={"task": c.model_dump(), "strategy": arm.strategy.model_dump(), "model": arm.model.model_dump(),
                    "mode": mode, "limit": limit, "backend": backend.describe(),
                    "binary": bool(metric_fns[0][1].binary), **sharding})
        if found is not None and found.status == "done":
            run = found
            if progress:
                progress(arm, len(store.done_ids(run.id)), len(numbered))
        else:
            ctx = StrategyContext(task=task, parts=prompt_parts(task), train=dataset.splits.get("train", []),
                                  mode=mode, seed=c.data.seed, workspace=workspace)
            strategy = strategies.get(arm.strategy.name)(arm.strategy, ctx)
            run = _score(store, store.claim(**fields), arm, numbered, strategy, lm, metric_fns, c.inputs, progress)
        records.append(store.get(run.id))
        if on_run:
            on_run(records[-1])
    return records


def _score(store: Store, claim: Claim, arm: Arm, numbered: list[tuple[int, Example]], strategy: Any, lm: LM,
           metric_fns: list[tuple[str, Any]], inputs: list[str], progress: ProgressFn | None) -> RunRecord:
    """Score the rows ``claim``'s run still lacks, chunk by chunk (each chunk committed: the resume point),
    holding the run's lease throughout; then mark the run finished."""
    run = claim.run
    if claim.note:
        logger.warning("%s: %s", arm.name, claim.note)
    with store.holding(claim):
        done = store.done_ids(run.id)
        todo = [(i, ex) for i, ex in numbered if ex.id not in done]
        if progress:
            progress(arm, len(done), len(numbered))
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            exs = [ex for _, ex in chunk]
            preds = strategy.predict(exs, lm)
            scored = {name: score_batch(fn, [p.answer for p in preds], exs) for name, fn in metric_fns}
            store.add_predictions([_row(run.id, i, ex, p, {name: s[k] for name, s in scored.items()}, inputs)
                                   for k, ((i, ex), p) in enumerate(zip(chunk, preds, strict=True))], claim)
            if progress:
                progress(arm, len(done) + start + len(chunk), len(numbered))
        store.finish(run.id, claim)
    return run


def _row(run_id: str, idx: int, ex: Example, p, scored: dict[str, Scored], inputs: list[str]) -> PredictionRow:
    scores = {name: s.value for name, s in scored.items()}
    # strategy-level measurements (e.g. retrieval recall@k) sit beside the task's metrics
    scores.update({k: float(v) for k, v in p.details.get("metrics", {}).items()})
    trace = p.trace
    return PredictionRow(
        run_id=run_id, idx=idx, example_id=ex.id, inputs={k: ex.fields.get(k) for k in inputs},
        target=ex.target, output=p.output, answer=p.answer, parse_failed=int(p.parse_failed),
        failed=int(p.failed), error=trace.error, score=scores[next(iter(scored))], metrics=scores,
        tokens_in=int(trace.total("tokens_in")), tokens_out=int(trace.total("tokens_out")),
        latency_ms=trace.total("latency_ms"), calls=trace.n_calls, cache_hits=trace.cache_hits,
        trace={"calls": trace.calls, "details": p.details}, scoring=_scoring(scored),
    )


def _scoring(scored: dict[str, Scored]) -> dict[str, Any] | None:
    """What the metrics spent on model calls for one example, and their reasons; None when nothing."""
    reasons = {name: s.reason for name, s in scored.items() if s.reason}
    calls = sum(s.calls for s in scored.values())
    if not calls and not reasons:
        return None
    return {"calls": calls, "tokens_in": sum(s.tokens_in for s in scored.values()),
            "tokens_out": sum(s.tokens_out for s in scored.values()), "cost": sum(s.cost for s in scored.values()),
            "reasons": reasons}
