"""The Python API: evaluate strategy x model arms on a task (a file, a loaded ``Task`` or rows in memory),
fine-tune, optimize a prompt and write the decision report, with typed results. The command line is a thin
layer over these functions.

Every function takes a ``workspace`` (``taskfit.Workspace``: the database, the call cache and the stores).
The default is ``Workspace.open()``: the ``./.taskfit`` folder of the current directory, the same place the
command line uses by default, so results, the call cache and resumable runs persist between sessions and
``taskfit runs`` / ``taskfit ui`` see them. Pass ``Workspace.open(tmp_dir)`` for a throwaway one.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import tokenize
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskfit.backends import backend_options
from taskfit.dataset import Dataset
from taskfit.errors import TaskfitError
from taskfit.leaderboard import render, rows, verdict
from taskfit.runner import Arm, ProgressFn
from taskfit.runner import evaluate as run_arms
from taskfit.shard import Shard
from taskfit.stages import Stages, StageTime
from taskfit.store import RunRecord
from taskfit.study import curve_points, distilled, prepare, select_arms, tuned_arms, with_teachers
from taskfit.taskfile import ModelSpec, StrategySpec, Task, TaskConfig
from taskfit.types import LeaderboardRow
from taskfit.workspace import Workspace

StrategyArg = str | dict[str, Any] | StrategySpec
ModelArg = str | dict[str, Any] | ModelSpec


@dataclass
class Leaderboard:
    """The result of ``evaluate``: rows best first, each a ``LeaderboardRow`` with a 95% CI and a paired test
    against the best row. ``print(board)`` shows the table; ``to_json()`` is what ``taskfit eval --json``
    prints (keys in docs/json.md)."""

    rows: list[LeaderboardRow]
    task: str = ""
    metric: str = ""
    runs: list[Any] = field(default_factory=list, repr=False)  # the stored RunRecords
    stages: list[StageTime] = field(default_factory=list, repr=False)  # where the time went, in order

    def __iter__(self) -> Iterator[LeaderboardRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> LeaderboardRow:
        return self.rows[i]

    @property
    def best(self) -> LeaderboardRow | None:
        return self.rows[0] if self.rows else None

    @property
    def verdict(self) -> str:
        """One sentence: the best row, the rows statistically tied with it, and the cheapest of those."""
        return verdict(self.rows)

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.rows]

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise TaskfitError("Leaderboard.to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(self.to_json())

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        title = f"Leaderboard: {self.task} ({self.metric})" if self.task else "Leaderboard"
        return Group(render(self.rows, title=title), Text(self.verdict))

    def __str__(self) -> str:
        from taskfit.terminal import console

        printer = console(file=io.StringIO(), width=120, color_system=None)
        printer.print(self)
        return printer.file.getvalue()  # type: ignore[attr-defined]


# -- tasks -----------------------------------------------------------------------------------------------


def task_from_rows(rows: Sequence[dict[str, Any]], *, inputs: list[str], output: str,
                   labels: list[str] | None = None, metric: Any = "exact_match", name: str = "task",
                   train: Sequence[dict[str, Any]] | None = None, **config: Any) -> Task:
    """A task from rows in memory, no file: ``rows`` are scored (the test split), ``train`` rows feed
    demonstrations and fine-tuning. ``metric`` is a registered name, a mapping (``{"judge": {...}}``), a
    Python function ``(prediction, target) -> float`` in [0, 1] (``fn.binary = True`` marks a 0/1 metric:
    Wilson intervals and McNemar's test), or a list of those, the first being the score. Other keyword
    arguments are task-file keys (``prompt``, ``strategies``, ``models``, ...; see docs/taskfile.md)."""
    metrics = metric if isinstance(metric, list) else [metric]
    specs: list[Any] = []
    objects: dict[str, Any] = {}
    identity = []
    for m in metrics:
        if callable(m):
            from taskfit.metrics.custom import python_metric

            label = getattr(m, "__name__", "")
            label = label if label.isidentifier() else f"python_metric_{len(objects)}"
            objects[label] = python_metric(m, label)
            specs.append({"name": label})
            identity.append(_function_identity(m))
        else:
            specs.append(m)
    raw = {"name": name, "data": {"test": "<rows>", **({"train": "<rows>"} if train else {})}, "inputs": inputs,
           "output": output, "labels": labels, "metrics": specs, **config}
    try:
        parsed = TaskConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise TaskfitError(f"invalid task: {problems}") from None
    text = json.dumps({"config": parsed.model_dump(), "metrics": identity}, sort_keys=True, default=str)
    task = Task(parsed, Path.cwd() / f"{name}.rows", text, identity_extra=identity)
    task.metric_objects = objects
    task.rows = {"test": list(rows), "train": list(train or [])}
    from taskfit.plugins import check_task

    registered = parsed.model_copy(update={"metrics": [m for m in parsed.metrics if m.name not in objects]})
    check_task(Task(registered, task.path, text), None)
    return task


def _function_identity(fn: Callable[..., Any]) -> str:
    """A Python metric's part of a run's identity: where it lives and its source, so editing it is a new run."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):  # no source file, or not the one it ran from
        source = ""
    where = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', repr(fn))}"
    return where + ":" + hashlib.sha256(source.encode()).hexdigest()[:16]


def load(task: str | Path | Task) -> tuple[Task, Dataset]:
    """A task and its data from a task file's path, a loaded ``Task`` or a ``Task.from_rows``."""
    return prepare(task)


def arms(task: Task, strategies: Sequence[StrategyArg] | None = None,
         models: Sequence[ModelArg] | None = None) -> list[Arm]:
    """Strategy x model arms: names (task-file rows or registered names), mappings or specs; None: the
    task's own."""
    strats = list(task.config.strategies) if strategies is None else [_strategy(task, s) for s in strategies]
    if models is None:  # the task's models, as select_arms picks them (an adapter-server template is not one)
        mods = [a.model for a in select_arms(task, [task.config.strategies[0].label()], None)]
    else:
        mods = [_model(task, m) for m in models]
    return [Arm(s, m) for m in mods for s in strats]


def _strategy(task: Task, s: StrategyArg) -> StrategySpec:
    if isinstance(s, StrategySpec):
        return s
    if isinstance(s, str):
        return select_arms(task, [s], None)[0].strategy
    try:
        return TaskConfig.model_validate({**_skeleton(task), "strategies": [s]}).strategies[0]
    except ValidationError as e:
        raise TaskfitError(f"strategy {s!r}: {e.errors()[0]['msg']}") from None


def _model(task: Task, m: ModelArg) -> ModelSpec:
    if isinstance(m, ModelSpec):
        return m
    if isinstance(m, str):
        return select_arms(task, [task.config.strategies[0].label()], [m])[0].model
    try:
        spec = ModelSpec.model_validate(m)
    except ValidationError as e:
        err = e.errors()[0]
        raise TaskfitError(f"model {m!r}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    backend_options(spec)  # the backend's own keys, checked before any run starts
    return spec


def _skeleton(task: Task) -> dict[str, Any]:
    c = task.config
    return {"name": c.name, "data": c.data.model_dump(exclude_none=True), "inputs": c.inputs, "output": c.output}


# -- the four jobs ---------------------------------------------------------------------------------------


def evaluate(task: str | Path | Task, strategies: Sequence[StrategyArg] | None = None,
             models: Sequence[ModelArg] | None = None, *, split: str | None = None, limit: int | None = None,
             workspace: Workspace | None = None, tuned: bool = False, train_limit: int | None = None,
             progress: ProgressFn | None = None, log: Callable[[str], None] = lambda s: None,
             on_step: Callable[[str, dict[str, float]], None] | None = None,
             on_run: Callable[[RunRecord], None] | None = None, shard: Shard | str | None = None) -> Leaderboard:
    """Evaluate strategies x models on a split and return the leaderboard.

    Args:
        task: a task file's path, a loaded ``Task``, or ``Task.from_rows(...)``.
        strategies, models: names, mappings or specs (default: the task's).
        split: train, dev or test (default: the task's). limit: first N rows (0: all; default: the task's).
        workspace: where runs, the call cache and tuned models live (default ``Workspace.open()``).
        tuned: also train (or reuse) the task's ``tuning:`` models, its ``distill:`` students and the sizes of
            its ``curve:`` entries, and put them on the leaderboard (trained in this process unless stored).
        on_run: called with each arm's stored run as it finishes, e.g. ``MlflowTracker(ws).on_run`` (export as
            the study goes; see docs/tracking.md).
        shard: score only this shard of the rows (``Shard`` or ``"I/N"``); ``taskfit merge-stores`` combines
            the shards' stores into the complete runs.
    """
    shard = Shard.parse(shard) if isinstance(shard, str) else shard
    ws = workspace or Workspace.open()
    stage = Stages()
    with stage("load"):
        task_obj, dataset = load(task)
        if dataset.skipped:
            log(dataset.skipped_note())
        chosen = arms(task_obj, strategies, models)
    if tuned:
        kw = {"workspace": ws, "train_limit": train_limit, "log": log, "on_step": on_step}
        with stage("tuning"):
            chosen += tuned_arms(task_obj, dataset, **kw)
        with stage("distillation"):
            chosen += distilled(task_obj, dataset, chosen, **kw)
        with stage("learning curve"):
            chosen += curve_points(task_obj, dataset, **kw)
    limit = task_obj.config.limit if limit is None else (limit or None)
    with stage("evaluation"):
        records = run_arms(task_obj, dataset, chosen, split=split or task_obj.config.split, limit=limit,
                           workspace=ws, progress=progress, on_run=on_run, shard=shard)
        table = with_teachers(task_obj, rows(ws, records), ws)
    return Leaderboard(table, task=task_obj.config.name, metric=task_obj.config.metrics[0].name, runs=records,
                       stages=stage.times)


def tune(task: str | Path | Task, method: str | None = None, *, objective: str | None = None,
         model: str | None = None, workspace: Workspace | None = None,
         on_step: Callable[[dict[str, float]], None] | None = None, log: Callable[[str], None] = lambda s: None,
         **options: Any):
    """Fine-tune a model on the task's train rows (or find it already trained) and return its ``TuneRecord``
    (``tuned:<id>`` is then a model name for ``evaluate``). ``options`` are ``TuneSpec`` fields (epochs,
    lr, rank, train_limit, ...; see docs/tuning.md)."""
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune as run_tune

    ws = workspace or Workspace.open()
    task_obj, dataset = load(task)
    given = {"method": method, "objective": objective, "model": model, **options}
    try:
        spec = TuneSpec(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        raise TaskfitError(f"tune: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    return run_tune(task_obj, dataset.split("train"), spec, store=ws.tunes, on_step=on_step, log=log)


def optimize(task: str | Path, budget: int, *, model: str | None = None, teacher: str | None = None,
             limit: int | None = None, workspace: Workspace | None = None, **options: Any):
    """Search prompt programs on the dev split within ``budget`` model calls, save the winner (usable as the
    strategy ``optimized:<id>``) and compare it with zero_shot on the test split; returns the ``Outcome``.
    ``options`` are ``OptimizeConfig`` fields (strategies, k, rounds, ...; see docs/optimize.md)."""
    from taskfit.optimize.run import optimize as run_optimize
    from taskfit.optimize.search import OptimizeConfig

    if isinstance(task, Task):
        raise TaskfitError("optimize takes a task file's path")
    try:
        config = OptimizeConfig(budget=budget, **options)
    except ValidationError as e:
        err = e.errors()[0]
        raise TaskfitError(f"optimize: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    return run_optimize(task, config, workspace=workspace or Workspace.open(), model=model, teacher=teacher,
                        limit=limit)


def report(targets: Sequence[str] | Leaderboard = (), out: str | Path | None = None, *,
           workspace: Workspace | None = None, baseline: str | None = None) -> Path:
    """Write the HTML decision report for a leaderboard, or for task files, task names or run ids (none: the
    latest study), and return its path (default ``<workspace>/reports/<task>-<study>.html``). ``baseline``
    (a run id, baseline name or saved file) adds a "compared with" section."""
    from taskfit.report import write_report

    ws = workspace or Workspace.open()
    names = [r.run_id for r in targets] if isinstance(targets, Leaderboard) else list(targets)
    return write_report(names, out, workspace=ws, baseline=baseline)


# -- regression gate -------------------------------------------------------------------------------------


def diff(baseline: str, candidate: str, *, workspace: Workspace | None = None):
    """Compare two rows example by example (run ids, baseline names or saved files, one row each): the
    ``Comparison`` with both scores, the difference with its 95% CI, the paired test and the flips."""
    from taskfit.baselines import resolve
    from taskfit.compare import compare

    ws = workspace or Workspace.open()
    a, b = resolve(baseline, ws), resolve(candidate, ws)
    for ref, side in ((baseline, a), (candidate, b)):
        if len(side) != 1:
            raise TaskfitError(f"{ref!r} holds {len(side)} rows; diff compares one row with one row: "
                               "name a run id")
    return compare(a[0], b[0])


def check(task: str | Path | Task | None, baseline: str, candidate: str | None = None, *,
          criteria: Any = None, split: str | None = None, limit: int | None = None,
          workspace: Workspace | None = None, progress: ProgressFn | None = None):
    """The regression gate: compare ``candidate`` (a run id, baseline name or saved file; None: evaluate the
    task's current configuration now, reusing the call cache) with ``baseline`` row by row on the same
    examples, and return the ``GateResult`` (``exit_code`` 0 pass, 1 fail). ``criteria``: a
    ``taskfit.gate.Criteria`` (default: fail only when significantly worse). ``split`` and ``limit`` default
    to the baseline's."""
    from taskfit.baselines import resolve
    from taskfit.compare import run_results
    from taskfit.gate import Criteria, judge

    ws = workspace or Workspace.open()
    base = resolve(baseline, ws)
    if candidate is not None:
        cand = resolve(candidate, ws)
    else:
        if task is None:
            raise TaskfitError("check needs a task to evaluate, or a candidate to compare")
        splits, limits = {r.split for r in base}, {r.limit for r in base}
        split = split or (splits.pop() if len(splits) == 1 else None)
        if limit is None and len(limits) == 1:
            limit = limits.pop() or 0  # the baseline's limit; None there means every row (0 here)
        by_model: dict[str, list[str]] = {}
        for r in base:
            by_model.setdefault(r.model, []).append(r.strategy)
        cand = []
        for model, strats in by_model.items():  # only the baseline's rows, not every strategy x model
            board = evaluate(task, strats, [model], split=split, limit=limit, workspace=ws, progress=progress)
            cand += [run_results(ws, run) for run in board.runs]
    return judge(base, cand, criteria or Criteria())

def export_mlflow(targets: Sequence[str] | Leaderboard = (), *, tracking_uri: str | None = None,
                  workspace: Workspace | None = None):
    """Export stored runs to MLflow (needs ``taskfit[mlflow]``) and return one ``TaskExport`` per task: an
    experiment per task, a parent run per study, a nested run per leaderboard row. Exporting again updates
    the same MLflow runs.

    Args:
        targets: a leaderboard, or task files, task names or run ids (none: the latest study).
        tracking_uri: where to (default: ``$MLFLOW_TRACKING_URI``, else MLflow's default local store).
    """
    from taskfit.report.data import resolve_targets
    from taskfit.tracking import open_tracker

    ws = workspace or Workspace.open()
    tracker = open_tracker("mlflow", ws, tracking_uri=tracking_uri)  # a missing mlflow is the first thing said
    runs = list(targets.runs) if isinstance(targets, Leaderboard) else resolve_targets(ws.runs, list(targets))
    return tracker.export(runs)
