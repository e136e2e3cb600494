"""`taskfit report` (the decision report) and `taskfit judge-check` (how far a judge model can be trusted)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from taskfit.commands import workspace
from taskfit.terminal import console

VolumeOpt = Annotated[
    str | None,
    typer.Option(help="Queries to price the recommendation at, e.g. 1000000, 250k or 1M/month: the cheapest row "
                 "the data cannot separate from the best wins, training cost included."),
]
LatencyOpt = Annotated[
    float | None,
    typer.Option("--latency-p50-ms", help="Only recommend rows whose median latency is at most this (ms)."),
]


def parse_volume_option(text: str | None):
    """--volume as a Volume, or a clear error."""
    from taskfit.costs import parse_volume
    from taskfit.errors import TaskfitError

    if text is None:
        return None
    try:
        return parse_volume(text)
    except ValueError as e:
        raise TaskfitError(f"--volume: {e}") from None


def cost_table(rec) -> Table:
    """Every row's one-time, per-query and total cost (at the recommendation's volume), best score first."""
    from taskfit.costs import basis_text, count, money
    from taskfit.recommend import TECHNIQUE_NAMES, row_name, technique

    volume = rec.volume
    t = Table(title="Cost" + (f" at {volume.text()}" if volume else ""), title_justify="left")
    for col in ("row", "technique", "score", "p50 ms", "one-time", "per 1,000 queries",
                *(["total"] if volume else []), "from"):
        t.add_column(col, justify="left" if col in ("row", "technique", "from") else "right")
    for row, c in rec.costs:
        mark = " (recommended)" if row is rec.row else ""
        t.add_row(row_name(row) + mark, TECHNIQUE_NAMES[technique(row)], f"{row.score:.3f}",
                  f"{row.latency_p50_ms:,.0f}", money(c.one_time, rec.unit),
                  money(c.per_query * 1000, rec.unit), *([money(c.total(volume.queries), rec.unit)] if volume else []),
                  basis_text(c, rec.tolerance))
    notes = [f"model time x hourly prices; model time is the row's work (tokens encoded, generated, trained on) "
             f"x the model's calibrated unit costs where a calibration applies, else the time measured during the "
             f"run (wall clock, ±{rec.tolerance:.0%}: costs.tolerance)"]
    if rec.break_even_rows is not None:
        prompt, tuned = rec.break_even_rows
        notes.append(f"break-even volume of {row_name(tuned)} against {row_name(prompt)}: "
                     f"{count(rec.break_even)} queries")
    t.caption = "; ".join(notes)
    return t


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
        volume: VolumeOpt = None,
        latency_p50_ms: LatencyOpt = None,
        baseline: Annotated[str | None, typer.Option(
            help="Add a 'compared with' section: each row against this baseline's row (a run id, baseline "
                 "name or saved file), example by example.")] = None,
    ) -> None:
        """Write one self-contained HTML decision report: leaderboard, plots and a recommendation."""
        from taskfit.report import report_data, save

        data = report_data(workspace(), targets or [], volume=parse_volume_option(volume),
                           latency_p50_ms=latency_p50_ms, baseline=baseline)
        printer = console()
        printer.print(cost_table(data.recommendation))
        printer.print(data.recommendation.text, highlight=False)
        printer.print(f"report: {save(data, out, workspace=workspace())}", highlight=False)

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
            record = workspace().runs.get(run)
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
        console().print(table)
