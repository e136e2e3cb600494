"""A study: load the task and its data, pick the strategy x model arms, evaluate them, rank them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from taskfit.backends import served_adapter
from taskfit.dataset import Dataset, load_dataset, rows_dataset
from taskfit.errors import TaskfitError
from taskfit.leaderboard import LeaderboardRow, rows
from taskfit.prompts import validate_templates
from taskfit.runner import Arm, ProgressFn, evaluate
from taskfit.strategies import strategies
from taskfit.taskfile import ModelSpec, StrategySpec, Task, load_task, strategy_shorthand

if TYPE_CHECKING:
    from taskfit.store import RunRecord
    from taskfit.workspace import Workspace


def prepare(task_path: str | Path | Task) -> tuple[Task, Dataset]:
    """Load and check everything that can be checked before a model is called: a task file's path, a loaded
    ``Task``, or a ``Task.from_rows`` (its rows in memory)."""
    task = task_path if isinstance(task_path, Task) else load_task(task_path)
    dataset = rows_dataset(task) if task.rows is not None else load_dataset(task)
    fields: set[str] = set()
    for exs in dataset.splits.values():
        if exs:
            fields |= set(exs[0].fields)
    scored = dataset.splits.get(task.config.split) or next((exs for exs in dataset.splits.values() if exs), [])
    used = validate_templates(task, fields or set(task.config.inputs), scored[0] if scored else None)
    # the inputs were checked as each row was read; a template may also show other fields of the row
    dataset.require(used - set(task.config.inputs), skip=task.config.data.on_missing == "skip")
    return task, dataset


def select_arms(task: Task, strategy_names: list[str] | None, model_names: list[str] | None) -> list[Arm]:
    """The task's strategies x models, narrowed by --strategy/--model (which may also name new ones)."""
    c = task.config
    strats = list(c.strategies)
    if strategy_names:
        by_label = {s.label(): s for s in strats}
        strats = []
        for name in strategy_names:
            if name in by_label:
                strats.append(by_label[name])
            elif name.partition(":")[0] in strategies.names():  # a name, or name:<run-id> (optimized)
                strats.append(StrategySpec.model_validate(strategy_shorthand(name)))
            else:
                raise TaskfitError(f"--strategy {name!r}: not a row of the task file ({', '.join(by_label)}) "
                                   f"nor a known strategy ({', '.join(strategies.names())})")
    models = [m for m in c.models if not served_adapter.is_template(m)]
    if model_names:
        by_label = {m.label(): m for m in models}
        models = [by_label.get(name) or _named_model(task, name) for name in model_names]
    return [Arm(s, m) for m in models for s in strats]


def _named_model(task: Task, name: str) -> ModelSpec:
    """A --model that is not a row of the task file: a tuned model (on the task's adapter server, if it names
    one) or a local model."""
    if name.startswith("tuned:"):
        return ModelSpec(backend="tuned", path=name, serve_via=served_adapter.template(task.config.models))
    return ModelSpec(backend="hf", path=name)


def tuned_arms(task: Task, dataset: Dataset, *, workspace: Workspace, train_limit: int | None = None,
               log: Callable[[str], None] = lambda s: None,
               on_step: Callable[[str, dict[str, float]], None] | None = None) -> list[Arm]:
    """Train (or find, or resume) each model the task's ``tuning:`` list asks for; one arm per model, with
    the strategy it was trained for (its sft prompt, or the classifier strategy for a head)."""
    from taskfit.tuning.tune import Job, tune

    arms = []
    for spec in task.config.tuning:
        if train_limit:
            spec = spec.model_copy(update={"train_limit": min(train_limit, spec.train_limit or train_limit)})
        log(f"tuning {spec.label()}")
        rec = tune(task, dataset.split("train"), spec, store=workspace.tunes, log=log,
                   on_step=(lambda p, name=spec.label(): on_step(name, p)) if on_step else None)
        row = Job.strategy_for(task, spec)
        arms.append(Arm(row, ModelSpec(backend="tuned", path=f"tuned:{rec.id}", name=spec.label(),
                                       serve_via=served_adapter.template(task.config.models))))
    return arms


def run_study(task_path: str | Path, *, workspace: Workspace, strategy_names: list[str] | None = None,
              model_names: list[str] | None = None,
              split: str | None = None, limit: int | None = None, progress: ProgressFn | None = None,
              with_tuning: bool = False, train_limit: int | None = None, log: Callable[[str], None] = lambda s: None,
              on_step: Callable[[str, dict[str, float]], None] | None = None,
              on_run: Callable[[RunRecord], None] | None = None) -> tuple[Task, list[LeaderboardRow]]:
    """Evaluate the chosen strategy x model arms (and, ``with_tuning``, the task's fine-tuned models), keeping
    runs, predictions, model calls and tuned models in ``workspace``."""
    task, dataset = prepare(task_path)
    arms = select_arms(task, strategy_names, model_names)
    if with_tuning:
        arms += trained_arms(task, dataset, arms, workspace=workspace, train_limit=train_limit, log=log,
                             on_step=on_step)
    limit = task.config.limit if limit is None else (limit or None)  # --limit 0: every row
    records = evaluate(task, dataset, arms, split=split or task.config.split, limit=limit, workspace=workspace,
                       progress=progress, on_run=on_run)
    return task, with_teachers(task, rows(workspace, records), workspace)


def trained_arms(task: Task, dataset: Dataset, arms: list[Arm], *, workspace: Workspace, **kw) -> list[Arm]:
    """What training adds to a study of ``arms``: the task's ``tuning:`` models, its ``distill:`` students
    and the sizes of its ``curve:`` entries (each trained once, then reused)."""
    added = tuned_arms(task, dataset, workspace=workspace, **kw)
    added += distilled(task, dataset, arms + added, workspace=workspace, **kw)
    return added + curve_points(task, dataset, workspace=workspace, **kw)


def distilled(task: Task, dataset: Dataset, arms: list[Arm], *, workspace: Workspace, **kw) -> list[Arm]:
    """The teachers and students the task's ``distill:`` list adds to ``arms`` (trained once, then reused)."""
    if not task.config.distill:
        return []
    from taskfit.distill.student import distilled_arms

    return distilled_arms(task, dataset, arms, workspace=workspace, **kw)


def curve_points(task: Task, dataset: Dataset, *, workspace: Workspace, **kw) -> list[Arm]:
    """The ``<row>@N`` models the task's ``curve:`` list adds to a study (trained once, then reused)."""
    if not task.config.curve:
        return []
    from taskfit.curve import study_curve_arms

    return study_curve_arms(task, dataset.split("train"), tunes=workspace.tunes, **kw)


def with_teachers(task: Task, table: list[LeaderboardRow], workspace: Workspace) -> list[LeaderboardRow]:
    """The leaderboard with each distilled student's agreement with its teacher and its gold twin's score."""
    if not task.config.distill:
        return table
    from taskfit.distill.board import annotate

    return annotate(table, workspace)
