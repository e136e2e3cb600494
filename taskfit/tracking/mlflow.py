"""Export to MLflow: an experiment per task, a parent run per study, one nested run per leaderboard row.

A row's MLflow run carries the run's settings as params (task, strategy and model options, the tuning spec,
data hashes, package versions and git commit), every number of its ``--json`` row as a metric, its technique,
whether it is the recommended row and its taskfit run id as tags, and its per-example predictions as an
MLflow table; a fine-tuned row also carries its adapter folder. The parent carries the HTML decision report
and the task file. Exporting again finds the MLflow runs by their taskfit run id (and study) and updates
them, so no run is duplicated.

mlflow is an optional dependency (``pip install 'taskfit[mlflow]'``), imported only here, inside functions.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskfit.errors import TaskfitError
from taskfit.store import RunRecord
from taskfit.types import LeaderboardRow, PredictionRow

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from taskfit.report.data import ReportData
    from taskfit.types import ReportRow
    from taskfit.workspace import Workspace

INSTALL = "pip install 'taskfit[mlflow]'"
RUN_TAG = "taskfit.run_id"  # the key that makes a second export update instead of duplicate
STUDY_TAG = "taskfit.study"
KIND_TAG = "taskfit.kind"  # "study" on a parent run, "row" on a leaderboard row's run
PREDICTIONS = "predictions.json"  # log_table appends to an existing file: it is written once per run
ADAPTER = "adapter"
REPORT = "report.html"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
BATCH = 100  # MLflow's limit on params, and on tags, per log_batch call
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]+")  # taskfit run and study ids, quoted into MLflow search filters


@dataclass(frozen=True)
class ExportedRun:
    """One leaderboard row's MLflow run."""

    run_id: str  # taskfit's
    mlflow_run_id: str
    created: bool  # by this tracker; False: the MLflow run of an earlier export, updated


@dataclass(frozen=True)
class TaskExport:
    """What one task's export wrote: its experiment, the study's parent run and a run per row."""

    task: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    runs: list[ExportedRun]

    def summary(self) -> str:
        new = sum(r.created for r in self.runs)
        return (f"{self.task}: {len(self.runs)} row{'s' * (len(self.runs) != 1)} ({new} new, {len(self.runs) - new} updated) in experiment "
                f"{self.task!r} (id {self.experiment_id}) at {self.tracking_uri}, parent run {self.parent_run_id}")


def connect(tracking_uri: str | None = None) -> tuple[MlflowClient, str]:
    """An MlflowClient and the URI it tracks to: ``tracking_uri``, else MLflow's own choice
    (``$MLFLOW_TRACKING_URI``, else its default local store)."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TaskfitError(f"exporting to MLflow needs mlflow: {INSTALL}") from None
    uri = tracking_uri or mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri), uri


class MlflowTracker:
    """Exports stored runs to one MLflow tracking URI; ``on_run`` exports as a study goes."""

    def __init__(self, workspace: Workspace, *, tracking_uri: str | None = None) -> None:
        self.workspace = workspace
        self.client, self.tracking_uri = connect(tracking_uri)
        self.exports: list[TaskExport] = []  # the latest export's
        self.error: str | None = None  # why the latest export during a study failed, if it did
        self._finished: dict[str, RunRecord] = {}
        self._created: set[str] = set()  # MLflow runs this tracker made (a study's first arm, updated later)

    def export(self, runs: Sequence[RunRecord]) -> list[TaskExport]:
        """Export finished ``runs``, one experiment per task, and return what was written."""
        unfinished = [r.id for r in runs if r.status != "done"]
        if unfinished:
            raise TaskfitError(f"runs not finished, not exported: {', '.join(unfinished)} (run the same "
                               "command again to finish them)")
        by_task: dict[str, list[RunRecord]] = {}
        for r in runs:
            by_task.setdefault(r.task_name, []).append(r)
        self.exports = [self._export_task(name, group) for name, group in by_task.items()]
        return self.exports

    def on_run(self, run: RunRecord) -> None:
        """After each arm of a study: export every run finished so far (a new best row changes the others'
        p vs best). A tracker that fails does not stop the study: ``error`` says why, and the stored runs
        can be exported later."""
        self._finished[run.id] = run
        try:
            self.export(list(self._finished.values()))
            self.error = None
        except Exception as e:  # noqa: BLE001 - any tracker failure (network, server) is reported, not raised
            self.error = f"{type(e).__name__}: {e}"

    # -- one task -----------------------------------------------------------------------------------------

    def _export_task(self, task: str, runs: list[RunRecord]) -> TaskExport:
        from taskfit.report.data import collect

        data = collect(self.workspace, runs)
        experiment_id = self._experiment(task)
        newest = max(runs, key=lambda r: r.created)  # a study's resumed arms keep the id of the study they began in
        parent = self._parent(experiment_id, newest, runs, data)
        pick = data.recommendation.row.run_id if data.recommendation.row else None
        by_id = {r.id: r for r in runs}
        exported = [self._row(experiment_id, parent, row, by_id[row.run_id], recommended=row.run_id == pick)
                    for row in data.rows]
        return TaskExport(task, self.tracking_uri, experiment_id, parent, exported)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self.client.create_experiment(name, tags={"taskfit.task": name})
        if found.lifecycle_stage != "active":
            raise TaskfitError(f"MLflow experiment {name!r} at {self.tracking_uri} is deleted: restore it "
                               "(`mlflow experiments restore`) or remove it for good (`mlflow gc`)")
        return found.experiment_id

    def _find(self, experiment_id: str, kind: str, tag: str, value: str) -> Run | None:
        if not _SAFE_ID.fullmatch(value):
            raise TaskfitError(f"{tag} {value!r}: not an id MLflow can search for")
        found = self.client.search_runs([experiment_id], max_results=2,
                                        filter_string=f"tags.`{KIND_TAG}` = '{kind}' and tags.`{tag}` = '{value}'")
        return found[0] if found else None

    def _open(self, experiment_id: str, kind: str, tag: str, value: str, start: float,
              tags: dict[str, str]) -> tuple[Run, bool]:
        """The MLflow run tagged ``tag=value``, else a new one; and whether it is new."""
        found = self._find(experiment_id, kind, tag, value)
        if found is not None:
            return found, False
        return self.client.create_run(experiment_id, start_time=int(start * 1000),
                                      tags={**tags, KIND_TAG: kind, tag: value}), True

    def _parent(self, experiment_id: str, newest: RunRecord, runs: list[RunRecord], data: ReportData) -> str:
        name = newest.task_name
        tags = {"mlflow.runName": f"{name} study {newest.study}", "taskfit.task": name,
                "recommendation": data.recommendation.choice,
                "mlflow.note.content": data.recommendation.text}  # the run's description in the MLflow UI
        run, _ = self._open(experiment_id, "study", STUDY_TAG, newest.study, min(r.created for r in runs), tags)
        params = {"task": name, "task_hash": newest.task_hash, "data_hash": newest.data_hash,
                  "split": newest.split, "metric": data.metric, "git_commit": newest.versions.get("git_commit")}
        self._log(run, params, {}, tags)
        from taskfit.report.html import render_html

        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / REPORT
            report.write_text(render_html(data), encoding="utf-8")
            self.client.log_artifact(run.info.run_id, str(report))
        task_file = Path(newest.task_path)
        # the task file only while it asks what the study asked (its identity is the run's task hash); edited
        # since, each row's run.json keeps the configuration it ran with
        if task_file.is_file() and _task_hash(task_file) == newest.task_hash:
            self.client.log_artifact(run.info.run_id, str(task_file), "task")
        self._finish(run, max(r.finished or r.created for r in runs))
        return run.info.run_id

    def _row(self, experiment_id: str, parent: str, row: ReportRow, run: RunRecord, *,
             recommended: bool) -> ExportedRun:
        tags = {"mlflow.runName": row.name, "mlflow.parentRunId": parent, STUDY_TAG: run.study,
                "taskfit.task": run.task_name, "technique": row.technique or "", "recommended": str(recommended).lower(),
                "strategy": row.strategy, "model": row.model}
        found, new = self._open(experiment_id, "row", RUN_TAG, run.id, run.created, tags)
        mlflow_id = found.info.run_id
        if new:
            self._created.add(mlflow_id)
        tune = self.workspace.tunes.get(row.tune["id"]) if row.tune and row.tune.get("id") else None
        self._log(found, run_params(run, tune.spec if tune else None), row_metrics(row), tags)
        have = {a.path for a in self.client.list_artifacts(mlflow_id)}
        if PREDICTIONS not in have:
            preds = self.workspace.runs.predictions(run.id, with_trace=False)
            self.client.log_table(mlflow_id, predictions_table(preds), PREDICTIONS)
        self.client.log_dict(mlflow_id, {"id": run.id, "key": run.key, "config": run.config,
                                         "versions": run.versions}, "run.json")
        if tune is not None and tune.folder.is_dir() and ADAPTER not in have:
            self.client.log_artifacts(mlflow_id, str(tune.folder), ADAPTER)
        self._finish(found, run.finished or run.created)
        return ExportedRun(run.id, mlflow_id, mlflow_id in self._created)

    def _finish(self, run: Run, at: float) -> None:
        """Mark the MLflow run finished, last: one an interrupted export left running is finished by the next."""
        if run.info.status != "FINISHED":
            self.client.set_terminated(run.info.run_id, "FINISHED", end_time=int(at * 1000))

    def _log(self, run: Run, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Log what changed: params MLflow does not have yet (a param cannot change), metrics whose value
        differs, every tag. A metric that has no value now (the p vs best of a row that became the best) is
        logged as NaN: MLflow cannot delete one, and its old value would be wrong."""
        from mlflow.entities import Metric, Param, RunTag

        old_params, old_metrics = run.data.params, run.data.metrics
        ps = [Param(k, _param_value(v)) for k, v in params.items() if v is not None and k not in old_params]
        # now, not the run's time: of two values at one step and time, MLflow shows the larger as the latest
        stamp = int(time.time() * 1000)
        gone = {k: math.nan for k, v in old_metrics.items() if k not in metrics and not math.isnan(v)}
        ms = [Metric(k, v, stamp, 0) for k, v in {**metrics, **gone}.items() if old_metrics.get(k) != v]
        ts = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(ps), len(ms), len(ts)), BATCH):
            self.client.log_batch(run.info.run_id, metrics=ms[i:i + BATCH], params=ps[i:i + BATCH],
                                  tags=ts[i:i + BATCH])


# -- what a row's run carries ----------------------------------------------------------------------------


def run_params(run: RunRecord, tune_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's settings as flat params: the task, strategy and model options, the tuning spec of a fine-tuned
    model, data hashes, package versions and the task folder's git commit."""
    config = run.config
    params: dict[str, Any] = {
        "task": run.task_name, "task_path": run.task_path, "task_hash": run.task_hash, "data_hash": run.data_hash,
        "split": run.split, "limit": config.get("limit"), "n_total": run.n_total, "mode": config.get("mode"),
        "metric": config["task"]["metrics"][0]["name"], "model_id": run.model_id,
        "git_commit": run.versions.get("git_commit"), "run_key": run.key,
    }
    params.update(flatten("strategy", config.get("strategy") or {}))
    params.update(flatten("model", config.get("model") or {}))
    params.update(flatten("versions", {k: v for k, v in run.versions.items() if k != "git_commit"}))
    if tune_spec:
        params.update(flatten("tune", tune_spec))
    return params


def row_metrics(row: LeaderboardRow) -> dict[str, float]:
    """Every number of the row's ``--json`` object, nested ones under dotted names (``metrics.accuracy``,
    ``tune.forgetting.score_change``); None, flags, text and lists (training curves) are left out."""
    out: dict[str, float] = {}

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{name}.{k}" if name else str(k), v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[metric_key(name)] = float(value)

    walk("", row.to_json())
    return out


def metric_key(name: str) -> str:
    """``name`` in the characters MLflow allows in a metric or param name (``recall@k`` -> ``recall_k``)."""
    return re.sub(r"[^\w./\- ]", "_", name)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested settings as ``prefix.key.sub`` params; lists stay whole (as JSON), None and {} are left out."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    return {} if value is None else {metric_key(prefix): value}


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_PARAM_VALUE:  # a long instruction: the whole of it is in the run's run.json artifact
        text = text[:MAX_PARAM_VALUE - 30] + f"... ({len(text)} characters)"
    return text


def predictions_table(preds: list[PredictionRow]) -> dict[str, list[Any]]:
    """A run's predictions as columns: the example, its inputs, target, answer and every metric's score."""
    inputs = sorted({k for p in preds for k in p.inputs})
    metrics = sorted({k for p in preds for k in p.metrics})
    columns: dict[str, list[Any]] = {"example_id": [p.example_id for p in preds]}
    columns.update({f"input.{k}": [p.inputs.get(k) for p in preds] for k in inputs})
    for name in ("target", "output", "answer", "score"):
        columns[name] = [getattr(p, name) for p in preds]
    columns.update({f"metric.{k}": [p.metrics.get(k) for p in preds] for k in metrics})
    for name in ("parse_failed", "failed", "error", "tokens_in", "tokens_out", "latency_ms", "calls", "cache_hits"):
        columns[name] = [getattr(p, name) for p in preds]
    return columns


def _task_hash(path: Path) -> str | None:
    """The identity the task file at ``path`` gives its runs now; "" when it no longer loads."""
    from taskfit.errors import TaskfitError
    from taskfit.taskfile import load_task

    try:
        return load_task(path).config_hash
    except TaskfitError:
        return ""
