"""`taskfit curve`: a learning curve for one tuning row, and from how many labelled rows it matches prompting."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from taskfit.commands import workspace
from taskfit.terminal import console


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def curve(
        task: Annotated[str, typer.Argument(help="Path to the task file (YAML).")],
        tuning: Annotated[str, typer.Option(help="The row of the task file's `tuning:` list to train, by name "
                                            "(e.g. minilm+full).")],
        sizes: Annotated[str, typer.Option(help="Comma-separated numbers of labelled train rows, e.g. "
                                           "50,100,200,400,800; each subset holds the smaller ones.")]
        = "50,100,200,400,800",
        split: Annotated[str | None, typer.Option(help="Split to score (default: the task's).")] = None,
        limit: Annotated[int | None, typer.Option(help="Score the first N rows of the split (0: all; default: "
                                                  "the task file's limit).")] = None,
        report: Annotated[bool, typer.Option(help="Write the HTML report of the curve and the prompt rows.")]
        = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print the points as JSON.")] = False,
    ) -> None:
        """Train a tuning row on nested subsets of the train split and say from how many labelled rows it is
        not significantly worse than the best prompt row."""
        from taskfit.curve import curves, learning_curve, tuning_row
        from taskfit.errors import TaskfitError
        from taskfit.recommend import score_text
        from taskfit.report import collect, save
        from taskfit.study import prepare

        try:
            counts = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            raise TaskfitError(f"--sizes {sizes!r}: give comma-separated row counts, e.g. 50,100,200") from None
        err = console(stderr=True, markup=True)
        t, dataset = prepare(task)
        spec = tuning_row(t, tuning)
        ws = workspace()
        records = learning_curve(
            t, dataset, spec, counts, workspace=ws, split=split, limit=limit,
            log=lambda m: err.print(f"[dim]{m}[/dim]", highlight=False),
            progress=lambda arm, done, total: done == total and err.print(f"[dim]{arm.name}: {done}/{total}[/dim]",
                                                                           highlight=False),
        )
        data = collect(ws, records)
        (lc,) = [c for c in curves(data.rows, data.pairwise) if c.recipe == spec.label()] or [None]
        if lc is None:
            raise TaskfitError("fewer than two distinct training sizes: nothing to draw")
        if as_json:
            print(json.dumps({"recipe": lc.recipe, "matches_from": lc.matches_from, "statement": lc.statement(),
                              "reference": _point(lc.reference),
                              "points": [{"size": p.size, **_point(p.row), "vs_reference": p.vs_reference}
                                         for p in lc.points]}, indent=2, default=list))
            return
        printer = console(markup=True)
        table = Table(title=f"Learning curve: {lc.recipe} on {t.config.name} ({data.metric}, "
                      f"{lc.points[0].row.n} test rows)", title_justify="left")
        for col in ("labelled rows", "score [95% CI]", "vs best prompt", "p", "training", "run"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for p in lc.points:
            c = p.vs_reference or {}
            tune = p.row.tune or {}
            table.add_row(f"{p.size:,}", score_text(p.row), f"{c.get('diff', 0) * 100:+.1f} pts" if c else "",
                          (f"{c['p']:.3f}" + (" *" if c["significant"] else "")) if c.get("p") is not None else "",
                          f"{tune.get('train_time_s') or 0:.0f} s", p.row.run_id)
        if lc.reference is not None:
            table.caption = (f"best prompt row: {lc.reference.strategy} x {lc.reference.model} "
                             f"{score_text(lc.reference)}; p: McNemar or paired bootstrap, * < 0.05")
        printer.print(table)
        printer.print(lc.statement(), highlight=False)
        if report:
            printer.print(f"report: {save(data, workspace=ws)}", highlight=False)


def _point(row) -> dict:
    keys = ("strategy", "model", "n", "score", "ci_low", "ci_high", "run_id")
    return {k: getattr(row, k) for k in keys} if row else {}
