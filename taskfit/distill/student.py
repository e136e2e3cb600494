"""A distillation top to bottom: the teacher labels, the student trains on its labels (and on the gold ones).

The student goes through the tuning machinery unchanged (every method, the plan, the forgetting check): only
its training rows differ, so its tuned model has its own identity and is trained once, then reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from taskfit.dataset import Dataset, Example
from taskfit.distill.label import Budget, Labelled, label, load_unlabeled, parse_teacher
from taskfit.distill.spec import DistillSpec
from taskfit.errors import TaskfitError
from taskfit.runner import Arm, BackendPool
from taskfit.taskfile import ModelSpec, Task
from taskfit.tuning.spec import TuneSpec
from taskfit.tuning.store import TuneRecord
from taskfit.workspace import Workspace

Log = Callable[[str], None]
REASONING = ("cot", "zero_shot_cot", "self_consistency")  # teachers whose replies carry reasoning


@dataclass
class Distilled:
    """What a distillation produced: the teacher's arm, its labels, and the students' arms."""

    spec: DistillSpec
    teacher: Arm
    labelled: Labelled
    student: Arm
    student_record: TuneRecord
    gold: Arm | None  # the same student trained on the gold labels of the same train rows
    gold_record: TuneRecord | None


def student_spec(task: Task, student: str | TuneSpec) -> TuneSpec:
    """The student's tuning spec: a row of the task's ``tuning:`` list by name or index, or a spec as given."""
    if isinstance(student, TuneSpec):
        return student
    rows = task.config.tuning
    match = [s for i, s in enumerate(rows) if s.label() == student or str(i) == student]
    if not match:
        raise TaskfitError(f"student {student!r}: not a row of the task file's tuning list "
                           f"({', '.join(s.label() for s in rows) or 'empty'}); name one or write a spec",
                           file=str(task.path), field="distill[].student")
    return match[0]


def row_name(spec: DistillSpec, student: TuneSpec) -> str:
    return spec.name or f"{student.label()}~{spec.teacher}"


def distill(task: Task, dataset: Dataset, spec: DistillSpec, *, workspace: Workspace,
            pool: BackendPool | None = None, budget: Budget | None = None, log: Log = lambda s: None,
            on_step: Callable[[str, dict[str, float]], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> Distilled:
    """Label with the teacher, train the student on its labels and (``spec.gold``) on the gold labels; runs,
    calls and tuned models are kept in ``workspace``."""
    from taskfit.tuning.tune import Job, tune

    pool = pool or BackendPool(workspace)
    tunes = workspace.tunes
    teacher = parse_teacher(task, spec.teacher)
    base = student_spec(task, spec.student)
    if spec.rationale and base.objective != "sft":
        raise TaskfitError("rationale distillation needs an sft student (a classifier learns labels only)",
                           file=str(task.path), field="distill[].rationale")
    if spec.rationale and teacher.strategy.name not in REASONING:
        raise TaskfitError(f"rationale distillation needs a reasoning teacher ({', '.join(REASONING)}), "
                           f"not {teacher.strategy.name}", file=str(task.path), field="distill[].rationale")
    limits = [n for n in (spec.train_limit, base.train_limit) if n]
    train = list(dataset.splits.get("train", []))[: min(limits) if limits else None]
    unlabeled = load_unlabeled(task)[: spec.unlabeled_limit] if spec.unlabeled else []
    rows = train + unlabeled
    writing = None  # what writing the synthetic inputs cost (part of the labelling cost)
    if spec.synthetic:
        from taskfit.distill.synthetic import synthesize

        written, writing = synthesize(task, dataset, spec.synthetic, teacher=teacher,
                                      backend=pool.get(teacher.model), cache=workspace.cache, log=log)
        rows += written
    if not rows:
        raise TaskfitError("nothing for the teacher to label: the task has no train rows and no `data.unlabeled`",
                           file=str(task.path), field="data.train")
    budget = budget or Budget(spec.budget_calls, spec.budget_dollars)
    log(f"teacher {teacher.name} labels {len(rows)} rows ({len(train)} train, {len(unlabeled)} unlabeled, "
        f"{len(rows) - len(train) - len(unlabeled)} synthetic)")
    labelled = label(task, teacher, rows, backend=pool.get(teacher.model), workspace=workspace,
                     demos=dataset.splits.get("train", []), budget=budget, progress=progress)
    if labelled.stopped:
        log(f"labelling stopped early: {labelled.stopped}")
    if not labelled.examples:
        raise TaskfitError(f"the teacher {spec.teacher} answered none of the {len(rows)} rows")
    name = row_name(spec, base)
    if spec.per_step:
        from taskfit.distill.chain import distill_steps

        student, steps = distill_steps(task, teacher, labelled, base, name, workspace=workspace, log=log,
                                       on_step=on_step)
        rec = steps[list(steps)[-1]]
        info = _info(spec, teacher, labelled, writing, len(train), len(unlabeled), len(rows), None, None, [])
        info["step_tunes"] = {k: r.id for k, r in steps.items()}
        tunes.update(rec.id, {**rec.result, "distill": info})
        return Distilled(spec, teacher, labelled, student, tunes.get(rec.id), None, None)
    train_on = labelled.examples
    sspec = base.model_copy(update={"name": name, "train_limit": None})
    if spec.rationale:
        train_on = [_with_rationale(ex, labelled.rationales[ex.id]) for ex in train_on]
        sspec = sspec.model_copy(update={"strategy": "rationale"})
    log(f"training the student {name} on {len(train_on)} teacher-labelled rows")
    step = (lambda p: on_step(name, p)) if on_step else None
    task_for_student = _rationale_task(task) if spec.rationale else task
    rec = tune(task_for_student, train_on, sspec, store=tunes, log=log, on_step=step)
    row = Job.strategy_for(task, sspec)
    student = Arm(row, ModelSpec(backend="tuned", path=f"tuned:{rec.id}", name=name))
    gold = gold_rec = None
    with_gold = [ex for ex in train if ex.target]
    if spec.gold and with_gold:
        # the spec a tuning row with the same limit has, so that on the same rows it is that row's model
        gspec = base.model_copy(update={"name": f"{base.label()}~gold",
                                        "train_limit": len(train) if limits else base.train_limit})
        log(f"training the same student on the gold labels of the {len(with_gold)} train rows")
        gold_rec = tune(task, with_gold, gspec, store=tunes, log=log,
                        on_step=(lambda p: on_step(gspec.label(), p)) if on_step else None)
        gold = Arm(row, ModelSpec(backend="tuned", path=f"tuned:{gold_rec.id}", name=gspec.label()))
    info = _info(spec, teacher, labelled, writing, len(train), len(unlabeled), len(rows), gold, gold_rec, with_gold)
    tunes.update(rec.id, {**rec.result, "distill": info})
    return Distilled(spec, teacher, labelled, student, tunes.get(rec.id), gold, gold_rec)


def _info(spec: DistillSpec, teacher: Arm, labelled: Labelled, writing, n_train: int, n_unlabeled: int, n_rows: int,
          gold: Arm | None, gold_rec: TuneRecord | None, with_gold: list[Example]) -> dict:
    """What a student's tune record keeps of its distillation (read back by the leaderboard)."""
    gold_by_id = {ex.id: ex.target for ex in with_gold}
    agree = [ex.target == gold_by_id[ex.id] for ex in labelled.examples if ex.id in gold_by_id]
    cost = labelled.cost.as_dict()
    if writing:  # writing synthetic inputs is part of what the labels cost
        for k in ("calls", "tokens_in", "tokens_out", "dollars"):
            cost[k] += getattr(writing, k)
    return {"teacher": spec.teacher, "teacher_row": teacher.name, "labels_run": labelled.run_id, "labelling": cost,
            "rows": {"train": n_train, "unlabeled": n_unlabeled, "synthetic": n_rows - n_train - n_unlabeled},
            "unanswered": labelled.unanswered, "stopped": labelled.stopped, "rationale": spec.rationale,
            "teacher_train_accuracy": sum(agree) / len(agree) if agree else None,
            "gold_tune": gold_rec.id if gold_rec else None, "gold_row": gold.model.label() if gold else None}


def _with_rationale(ex: Example, reasoning: str) -> Example:
    """The target of a rationale student: the teacher's reasoning, then its answer (as the rationale strategy
    reads it back)."""
    text = f"{reasoning}\nThe answer is {ex.target}." if reasoning else f"The answer is {ex.target}."
    return Example(id=ex.id, fields=ex.fields, target=text, answers=ex.answers, source=ex.source)


def _rationale_task(task: Task) -> Task:
    """The task as a rationale student learns it: a free-text reply (reasoning, then the answer), no prefix."""
    import yaml

    prompt = task.config.prompt.model_copy(update={"response_prefix": ""})
    config = task.config.model_copy(update={"labels": None, "prompt": prompt})
    return Task(config, task.path, yaml.safe_dump(config.model_dump(mode="json")))


def distilled_arms(task: Task, dataset: Dataset, arms: list[Arm], *, workspace: Workspace,
                   pool: BackendPool | None = None, train_limit: int | None = None, log: Log = lambda s: None,
                   on_step: Callable[[str, dict[str, float]], None] | None = None) -> list[Arm]:
    """The arms the task's ``distill:`` list adds to a study that already has ``arms``: each teacher, student
    and gold student that is not on it yet (a gold student identical to a ``tuning:`` model is that model)."""
    have = {a.name for a in arms} | {a.model.options.get("path") for a in arms if a.model.backend == "tuned"}
    out: list[Arm] = []
    for spec in task.config.distill:
        if train_limit:
            spec = spec.model_copy(update={"train_limit": min(train_limit, spec.train_limit or train_limit)})
        d = distill(task, dataset, spec, workspace=workspace, pool=pool, log=log, on_step=on_step,
                    progress=_every_tenth(f"teacher {spec.teacher}", log))
        for arm in (d.teacher, d.student, d.gold):
            if arm is None or arm.name in have or (arm.model.backend == "tuned" and arm.model.options.get("path") in have):
                continue
            have |= {arm.name, arm.model.options.get("path")}
            out.append(arm)
    return out


def _every_tenth(name: str, log: Log) -> Callable[[int, int], None]:
    """A labelling progress callback that logs each tenth of the rows once."""
    said = [0]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > said[0]:
            said[0] = tenth
            log(f"{name}: {done}/{total} rows labelled")
    return progress
