"""Learning curves: how many labelled rows a fine-tuned model needs to match the best prompt.

``learning_curve`` trains one tuning row of the task file on nested subsets of the train split (the first N
rows of the same seeded order, so every subset holds the smaller ones), scores each model on the same test
rows, and returns the run records. ``curves`` reads curves back from leaderboard rows (a pure function, used
by ``taskfit curve`` and the report): fine-tuned rows of one recipe (same row name up to an ``@N`` suffix)
trained on different numbers of rows, each compared with the best prompt row by the paired test.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskfit.errors import TaskfitError
from taskfit.recommend import ALPHA, compare_rows, row_name, score_text, technique

if TYPE_CHECKING:
    from taskfit.dataset import Dataset
    from taskfit.runner import Arm, ProgressFn
    from taskfit.store import RunRecord
    from taskfit.taskfile import Task
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.store import TuneStore
    from taskfit.types import ReportRow
    from taskfit.workspace import Workspace

CURVE_STUDY = "curve-"  # study ids of `taskfit curve`: kept out of a task's latest study
_SIZE = re.compile(r"@(\d+)$")


class CurveSpec(BaseModel):
    """One row of a task file's ``curve:`` list: a tuning row trained on nested subsets within ``taskfit run``."""

    model_config = ConfigDict(extra="forbid")

    tuning: str = Field(description="The name of a row of the task file's `tuning:` list.")
    sizes: list[int] = Field(
        min_length=1, description="Numbers of labelled train rows, e.g. `[50, 100, 200]`; each subset holds the "
        "smaller ones (the first N rows of the same seeded order). The row itself is the curve's point at its "
        "own number of rows.")

    @field_validator("sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"sizes {v}: give positive numbers of rows, e.g. [50, 100, 200]")
        return v


@dataclass
class CurvePoint:
    size: int  # labelled rows the model was trained on
    row: ReportRow
    vs_reference: dict[str, Any] | None = None  # paired comparison with the best prompt row: p, diff, significant

    @property
    def worse(self) -> bool:
        """Significantly worse than the reference row."""
        return bool(self.vs_reference and self.vs_reference["significant"] and self.vs_reference["diff"] < 0)

    @property
    def better(self) -> bool:
        return bool(self.vs_reference and self.vs_reference["significant"] and self.vs_reference["diff"] > 0)


@dataclass
class LearningCurve:
    recipe: str  # the tuning row's name
    points: list[CurvePoint] = field(default_factory=list)  # by size
    reference: ReportRow | None = None  # the best prompt row

    @property
    def matches_from(self) -> int | None:
        """The smallest size from which no point is significantly worse than the reference (None: never)."""
        if self.reference is None:
            return None
        size = None
        for p in reversed(self.points):
            if p.worse:
                break
            size = p.size
        return size

    def statement(self) -> str:
        """One sentence: from how many labelled rows fine-tuning matches the best prompt, or that it does not."""
        if not self.points:
            return f"{self.recipe}: no points."
        if self.reference is None:
            return f"{self.recipe}: no prompt row to compare with."
        ref = f"the best prompt row, {row_name(self.reference)} ({score_text(self.reference)})"
        n = self.matches_from
        if n is None:
            last = self.points[-1]
            return (f"Fine-tuning ({self.recipe}) does not match {ref} with up to {last.size:,} labelled rows: at "
                    f"{last.size:,} it scores {score_text(last.row)}, {_diff(last)}.")
        text = (f"Fine-tuning ({self.recipe}) matches {ref} from ~{n:,} labelled rows (not significantly worse, "
                f"p >= {ALPHA} or better, at every size from there)")
        beats = next((p.size for p in self.points if p.size >= n and p.better), None)
        if beats is not None:
            text += f"; it is significantly better from {beats:,} rows"
        return text + "."


def _diff(p: CurvePoint) -> str:
    c = p.vs_reference or {}
    text = f"{round(c.get('diff', 0.0) * 100, 1) + 0.0:+.1f} points"
    return text + (f" (p = {c['p']:.3f})" if c.get("p") is not None else "")


def recipe_of(row: ReportRow) -> str:
    """The tuning row's name without the curve's ``@N`` suffix."""
    return _SIZE.sub("", row.model)


def curves(
    rows: Sequence[ReportRow],
    pairwise: dict[tuple[str, str], dict[str, Any]],
    reference: ReportRow | None = None,
) -> list[LearningCurve]:
    """Every recipe with fine-tuned rows at two or more training sizes, compared with ``reference`` (default:
    the best-scoring prompt row). The size is the tuned model's stored row count."""
    ranked = sorted(rows, key=lambda r: -r.score)
    if reference is None:
        reference = next((r for r in ranked if technique(r) == "prompting"), None)
    groups: dict[str, dict[int, ReportRow]] = {}
    for r in ranked:
        size = (r.tune or {}).get("rows")
        if technique(r) == "fine_tune" and size:
            groups.setdefault(recipe_of(r), {}).setdefault(int(size), r)
    out = []
    for recipe, by_size in groups.items():
        if len(by_size) < 2:
            continue
        curve = LearningCurve(recipe, reference=reference)
        for size in sorted(by_size):
            r = by_size[size]
            cmp = compare_rows(r, reference, ranked[0], pairwise) if reference is not None else None
            curve.points.append(CurvePoint(size, r, cmp))
        out.append(curve)
    return out


def tuning_row(task: Task, name: str) -> TuneSpec:
    """The task file's tuning entry called ``name``."""
    rows = {spec.label(): spec for spec in task.config.tuning}
    if name not in rows:
        raise TaskfitError(f"--tuning {name!r}: not a row of the task file's `tuning:` "
                           f"({', '.join(rows) or 'none'})", file=str(task.path), field="tuning")
    return rows[name]


def curve_arms(
    task: Task,
    train: Sequence[Any],
    spec: TuneSpec,
    sizes: Sequence[int],
    *,
    tunes: TuneStore,
    log: Callable[[str], None] = lambda s: None,
    on_step: Callable[[str, dict[str, float]], None] | None = None,
) -> list[Arm]:
    """Train (or find) ``spec`` on the first N of ``train`` for each N in ``sizes``; one arm per model, named
    ``<row>@N``, ready to join any study's arms."""
    from taskfit.runner import Arm
    from taskfit.taskfile import ModelSpec
    from taskfit.tuning.tune import Job, tune

    if not train:
        raise TaskfitError("a learning curve needs a train split", file=str(task.path), field="data.train")
    wanted = sorted({min(int(n), len(train)) for n in sizes if int(n) > 0})
    if not wanted:
        raise TaskfitError("--sizes: give positive row counts, e.g. 50,100,200")
    if max(int(n) for n in sizes) > len(train):
        log(f"the train split has {len(train):,} rows: sizes above it train on all of them")
    arms = []
    for n in wanted:
        # all rows: no limit, so the model is the study's own when it was trained already
        sized = spec.model_copy(update={"train_limit": n if n < len(train) else None,
                                        "name": f"{spec.label()}@{n}"})
        log(f"tuning {sized.label()}")
        rec = tune(task, train, sized, store=tunes, log=log,
                   on_step=(lambda p, name=sized.label(): on_step(name, p)) if on_step else None)
        arms.append(Arm(Job.strategy_for(task, sized), ModelSpec(backend="tuned", path=f"tuned:{rec.id}",
                                                                    name=sized.label())))
    return arms


def study_curve_arms(
    task: Task,
    train: Sequence[Any],
    *,
    tunes: TuneStore,
    train_limit: int | None = None,
    log: Callable[[str], None] = lambda s: None,
    on_step: Callable[[str, dict[str, float]], None] | None = None,
) -> list[Arm]:
    """The ``<row>@N`` arms of the task file's ``curve:`` list, to join a study that also holds each tuning
    row itself: sizes are capped at ``train_limit``, and a size the row itself is trained on is left out (the
    row is that point of its curve)."""
    arms: list[Arm] = []
    for entry in task.config.curve:
        spec = tuning_row(task, entry.tuning)
        own = min(n for n in (len(train), spec.train_limit, train_limit) if n)
        sizes = {min(n, train_limit or n, len(train)) for n in entry.sizes} - {own}
        if sizes:
            arms += curve_arms(task, train, spec, sorted(sizes), tunes=tunes, log=log, on_step=on_step)
    return arms


def learning_curve(
    task: Task,
    dataset: Dataset,
    spec: TuneSpec,
    sizes: Sequence[int],
    *,
    workspace: Workspace,
    split: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = lambda s: None,
    on_step: Callable[[str, dict[str, float]], None] | None = None,
    progress: ProgressFn | None = None,
) -> list[RunRecord]:
    """Train ``spec`` on the first N train rows for each N in ``sizes`` and score every model, and the task's
    prompt rows, on the same test rows; returns the run records (prompt rows already scored with the same
    settings are reused, not run again)."""
    from taskfit.runner import evaluate
    from taskfit.study import select_arms

    arms = curve_arms(task, dataset.split("train"), spec, sizes, tunes=workspace.tunes, log=log, on_step=on_step)
    split = split or task.config.split
    limit = task.config.limit if limit is None else (limit or None)
    reused, todo = _finished_prompt_runs(task, dataset, select_arms(task, None, None), split, limit, workspace)
    study = CURVE_STUDY + uuid.uuid4().hex[:8]
    return reused + evaluate(task, dataset, todo + arms, split=split, limit=limit, workspace=workspace,
                             progress=progress, study=study)


def _finished_prompt_runs(task, dataset, arms, split, limit, workspace) -> tuple[list[RunRecord], list]:
    """Prompt arms already scored with exactly these settings (their finished runs), and the rest."""
    from taskfit.runner import run_key

    finished = {r.key: r for r in reversed(workspace.runs.list(limit=1_000_000)) if r.status == "done"}
    reused, todo = [], []
    for arm in arms:
        hit = next((finished[k] for mode in ("score", "generate")
                    if (k := run_key(task, dataset, arm, split, limit, mode)) in finished), None)
        if hit is not None:
            reused.append(hit)
        else:
            todo.append(arm)
    return reused, todo


def latest_curve_runs(runs: Sequence[RunRecord], task_name: str) -> list[RunRecord]:
    """The fine-tuned runs of a task's latest ``taskfit curve`` study (newest first in ``runs``)."""
    mine = [r for r in runs if r.task_name == task_name and r.study.startswith(CURVE_STUDY)
            and r.status == "done"]
    if not mine:
        return []
    study = mine[0].study
    return [r for r in mine if r.study == study and r.config.get("model", {}).get("backend") == "tuned"]
