"""`taskfit distill`: a teacher (strategy x model) labels the inputs, a student learns from its answers, and
teacher, student and the student trained on gold labels meet on one leaderboard."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from taskfit.errors import TaskfitError
from taskfit.terminal import console

out = console(markup=True)
if not out.is_terminal:
    out = console(width=200, markup=True)
err = console(stderr=True, markup=True)

TaskArg = Annotated[str, typer.Argument(help="Path to the task file (YAML).")]


def parse_budget(text: str | None):
    """``500`` (calls) or ``$2.50`` / ``2.50$`` (dollars)."""
    from taskfit.distill.label import Budget

    if text is None:
        return None
    raw = text.strip()
    try:
        if raw.startswith("$") or raw.endswith("$"):
            return Budget(dollars=float(raw.strip("$")))
        return Budget(calls=int(raw))
    except ValueError:
        raise TaskfitError(f"--budget {text!r}: give a number of calls (500) or dollars ($2.50)") from None


def register(app: typer.Typer) -> None:
    """Add `distill` to the `taskfit` app."""

    @app.command()
    def distill(
        task: TaskArg,
        teacher: Annotated[str, typer.Option(help="<strategy>@<model>: a strategy row and a model row of the task "
                                             "file, e.g. structured@smollm2-135m.")],
        student: Annotated[str, typer.Option(help="A row of the task file's `tuning:` list (name or index).")],
        train_limit: Annotated[int | None, typer.Option(help="Label only the first N train inputs.")] = None,
        unlabeled: Annotated[bool, typer.Option(help="Also label the rows of `data.unlabeled`.")] = True,
        synthetic: Annotated[int | None, typer.Option(help="The teacher also writes N new inputs in the style of "
                                                      "the train inputs, and labels them.")] = None,
        rationale: Annotated[bool, typer.Option(help="An sft student learns the reasoning teacher's whole reply.")
                             ] = False,
        per_step: Annotated[bool, typer.Option(help="A chain teacher: one student per step; the chain then runs "
                                               "on the students.")] = False,
        gold: Annotated[bool, typer.Option(help="Also train the student on the gold labels, for comparison.")] = True,
        budget: Annotated[str | None, typer.Option(help="Most the teacher may spend: calls (500) or dollars "
                                                   "($2.50).")] = None,
        dry_run: Annotated[bool, typer.Option(help="Print the labelling estimate (calls, tokens, $) and stop.")
                           ] = False,
        name: Annotated[str | None, typer.Option(help="The student's row name.")] = None,
        limit: Annotated[int | None, typer.Option(help="Score the first N rows of the task's split (0: all).")
                         ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic inputs.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the leaderboard rows as JSON.")] = False,
    ) -> None:
        """Distil a teacher into a student: label, train, and score teacher, student and gold student."""
        from taskfit.commands import workspace
        from taskfit.distill.spec import DistillSpec, SyntheticSpec
        from taskfit.study import prepare

        spec = DistillSpec(teacher=teacher, student=student, train_limit=train_limit, unlabeled=unlabeled,
                           synthetic=SyntheticSpec(n=synthetic, seed=seed) if synthetic else None,
                           rationale=rationale, per_step=per_step, gold=gold, name=name)
        ws = workspace()
        task_obj, dataset = prepare(task)
        if dry_run:
            _print_estimate(task_obj, dataset, spec, ws, parse_budget(budget))
            return
        table = run_distill(task_obj, dataset, spec, ws, budget=parse_budget(budget), limit=limit)
        if as_json:
            print(json.dumps([r.to_json() for r in table], indent=2, default=str))
            return
        from taskfit.distill.board import render as render_students
        from taskfit.leaderboard import render, verdict

        out.print(render(table, title=f"Distillation: {task_obj.config.name} ({table[0].metric})"))
        out.print(verdict(table), highlight=False)
        out.print(render_students(table))


def run_distill(task, dataset, spec, ws, *, budget=None, limit=None):
    """Distil, then score the teacher, the student and the gold student on the task's split."""
    from taskfit.distill.board import annotate
    from taskfit.distill.student import distill
    from taskfit.leaderboard import rows
    from taskfit.runner import BackendPool, evaluate

    pool = BackendPool(ws)
    log = lambda m: err.print(m, style="dim", highlight=False)  # noqa: E731
    d = distill(task, dataset, spec, workspace=ws, pool=pool, budget=budget,
                log=log, on_step=_step_printer,
                progress=lambda done, total: log(f"labelled {done}/{total}") if done % 256 < 32 or done == total
                else None)
    c = task.config
    limit = c.limit if limit is None else (limit or None)
    arms = [d.teacher, d.student, *([d.gold] if d.gold else [])]
    try:
        records = evaluate(task, dataset, arms, split=c.split, limit=limit, workspace=ws, pool=pool)
    finally:
        pool.close()
    return annotate(rows(ws, records), ws)


def _step_printer(name: str, p: dict[str, float]) -> None:
    if p["step"] == 1 or p["step"] % 10 == 0:
        err.print(f"{name}: step {p['step']:.0f}, epoch {p['epoch']:.2f}, loss {p['loss']:.4f} "
                  f"({p['time_s']:.0f} s)", style="dim", highlight=False)


def _print_estimate(task, dataset, spec, ws, budget) -> None:
    from taskfit.distill.label import affordable, estimate, load_unlabeled, parse_teacher
    from taskfit.distill.student import student_spec

    arm = parse_teacher(task, spec.teacher)
    base = student_spec(task, spec.student)
    limits = [n for n in (spec.train_limit, base.train_limit) if n]
    train = list(dataset.splits.get("train", []))[: min(limits) if limits else None]
    rows = train + (load_unlabeled(task)[: spec.unlabeled_limit] if spec.unlabeled else [])
    est = estimate(task, arm, rows, cache=ws.cache, demos=dataset.splits.get("train", []))  # loads no model
    out.print(f"teacher {arm.name} on {est.rows} rows ({len(train)} train, {est.rows - len(train)} unlabeled): "
              f"{est.calls:,} calls ({est.cached:,} already cached), then {est.tokens_in:,} tokens in, "
              f"about {est.tokens_out:,} tokens out, ${est.dollars:.4f}, about {est.seconds:,.0f} s of model time",
              highlight=False)
    if spec.synthetic:
        out.print(f"plus writing {spec.synthetic.n} synthetic inputs (about {spec.synthetic.n} generation calls "
                  f"of <= {spec.synthetic.max_tokens} tokens) and labelling them", highlight=False)
    if budget:
        out.print(f"the budget affords {affordable(est, budget)} of the {est.rows} rows", highlight=False)
