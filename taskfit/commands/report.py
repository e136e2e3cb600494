"""`taskfit report` (the decision report) and `taskfit judge-check` (how far a judge model can be trusted)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taskfit.commands import workspace


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def report(
        targets: Annotated[
            list[str] | None,
            typer.Argument(help="Task files, task names or run ids; default: the latest study."),
        ] = None,
        out: Annotated[
            str | None,
            typer.Option(
                "--out",
                "-o",
                help="Where to write the HTML file (default: $TASKFIT_HOME/reports/<task>-<study>.html).",
            ),
        ] = None,
    ) -> None:
        """Write one self-contained HTML decision report: leaderboard, plots and a recommendation."""
        from taskfit.report import write_report

        path = write_report(targets or [], out, workspace=workspace())
        Console(markup=False).print(f"report: {path}", highlight=False)

    @app.command("judge-check")
    def judge_check(
        task: Annotated[str, typer.Argument(help="Path to the task file (YAML).")],
        candidate: Annotated[
            str | None,
            typer.Option(help="Data field holding the answer to judge (e.g. student_answer); with --human."),
        ] = None,
        human: Annotated[
            str | None,
            typer.Option(
                help="Data field holding the human verdict (correct/incorrect, true/false, yes/no, 1/0)."
            ),
        ] = None,
        reference: Annotated[
            str | None, typer.Option(help="Data field holding the reference answer (default: none shown).")
        ] = None,
        run: Annotated[
            str | None,
            typer.Option(
                help="Judge a run's stored answers instead, against a stored "
                "0/1 metric (--gold-metric) as the gold verdict."
            ),
        ] = None,
        gold_metric: Annotated[
            str, typer.Option(help="With --run: the stored metric used as gold.")
        ] = "exact_match",
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="Judge model: a row name of the task, a "
                "local folder or 'bundled' (default: the task's first local "
                "model).",
            ),
        ] = None,
        rubric: Annotated[
            str | None, typer.Option(help="Grading rubric (default: the judge metric's).")
        ] = None,
        temperature: Annotated[
            float,
            typer.Option(
                help="Sampling temperature for written verdicts; > 0 measures the flip rate over two samples."
            ),
        ] = 0.0,
        mode: Annotated[
            str, typer.Option(help="auto, score (verdict log-likelihoods) or generate.")
        ] = "auto",
        calibrate: Annotated[
            bool,
            typer.Option(
                help="Scored verdicts: remove the judge's lean to one verdict (contextual calibration)."
            ),
        ] = True,
        split: Annotated[
            str | None, typer.Option(help="Split to read rows from (default: the task's).")
        ] = None,
        limit: Annotated[int, typer.Option(help="Judge the first N rows.")] = 40,
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    ) -> None:
        """Measure a judge model against labels: agreement, Cohen's kappa and its run-to-run flip rate."""
        from taskfit.errors import TaskfitError
        from taskfit.metrics import judge as judging
        from taskfit.study import prepare

        t, dataset = prepare(task)
        if run:
            record = workspace().runs.run(run)
            if record is None:
                raise TaskfitError(f"no run (or more than one) matches {run!r}; see `taskfit runs`")
            preds = workspace().runs.predictions(record.id, with_trace=False)[:limit]
            items, labels = judging.items_from_predictions(preds, gold_metric)
            gold = f"stored {gold_metric} of run {record.id}"
        elif candidate and human:
            examples = dataset.split(split or t.config.split)[:limit]
            items, labels = judging.items_from_rows(
                examples, inputs=t.config.inputs, candidate=candidate, reference=reference, human=human
            )
            gold = f"field {human!r}"
        else:
            raise TaskfitError(
                "judge-check needs --candidate and --human (labelled data) or --run (stored answers)"
            )
        if not items:
            raise TaskfitError("judge-check: no items to judge")
        spec = judging.judge_model_for(t, model)
        judge = judging.Judge(
            spec,
            rubric=rubric or judging.DEFAULT_RUBRIC,
            mode=mode,  # type: ignore[arg-type]
            temperature=temperature,
            calibrate=calibrate,
            workspace=workspace(),
        )
        cal, _ = judging.calibrate(judge, items, labels)
        figures = {
            "judge": spec.label(),
            "gold": gold,
            "verdicts": "scored" if judge.uses_scores() else "written",
            **asdict(cal),
        }
        if as_json:
            print(json.dumps(figures, indent=2))
            return
        table = Table(
            title=f"Judge check: {spec.label()} on {t.config.name} ({len(items)} items, gold: {gold})"
        )
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("agreement with gold (accuracy)", f"{cal.accuracy:.3f}")
        table.add_row("Cohen's kappa", f"{cal.kappa:.3f}")
        table.add_row(f"flip rate ({cal.repeat})", f"{cal.flip_rate:.3f}")
        table.add_row("judged correct / gold correct", f"{cal.judge_positive:.2f} / {cal.human_positive:.2f}")
        table.add_row("unreadable verdicts", str(cal.unreadable))
        Console(markup=False).print(table)
