"""`taskfit check` (the regression gate), `taskfit diff` (the per-example comparison behind it) and
`taskfit baseline` (named baselines and saved baseline files)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from taskfit.commands import workspace
from taskfit.errors import TaskfitError
from taskfit.terminal import console

out = console(highlight=False, soft_wrap=True)  # one line per summary or flip: CI logs are grepped
err = console(stderr=True, highlight=False)

USAGE_ERROR = 2  # exit code of a bad reference or option; 1 is kept for "the gate failed"


def _flip_lines(title: str, flips, limit: int, option: str) -> None:
    """Flips with their inputs, both answers and the gold answer; model text escaped for the terminal."""
    from taskfit.terminal import safe_text as printable

    if not flips:
        return
    out.print(Text(f"{title} ({len(flips)})", style="bold"))
    for f in flips[:limit]:
        text = " | ".join(str(v) for v in f.inputs.values())
        out.print(Text.assemble(("  " + printable(f.example_id), "bold"), f"  {printable(text)[:300]}"))
        out.print(Text.assemble("    gold: ", printable(f.target), "   baseline: ", printable(str(f.baseline_answer)),
                                f" ({f.baseline_score:.2f})", "   candidate: ", printable(str(f.candidate_answer)),
                                f" ({f.candidate_score:.2f})"))
    if len(flips) > limit:
        out.print(f"  ... {len(flips) - limit} more ({option})", style="dim")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def check(
        task: Annotated[str, typer.Argument(help="The task file whose current configuration is the candidate.")],
        baseline: Annotated[str | None, typer.Option(
            help="Run id, baseline name or saved file (eval --json --per-example); default: the baseline named "
                 "after the task.")] = None,
        candidate: Annotated[str | None, typer.Option(
            help="Run id, baseline name or saved file; default: evaluate the task now (the call cache is "
                 "reused: unchanged rows make no model calls).")] = None,
        min_score: Annotated[float | None, typer.Option(help="Fail a row whose score is below this.")] = None,
        margin: Annotated[float | None, typer.Option(
            help="Non-inferiority margin: fail unless the difference's lower 95% bound is above -MARGIN.")] = None,
        max_parse_fail: Annotated[float | None, typer.Option(
            help="Fail a row whose share of unreadable replies is above this (0.05 = 5%).")] = None,
        max_cost_per_1k: Annotated[float | None, typer.Option(
            "--max-cost-per-1k", help="Fail a row that costs more than this many $ per 1,000 queries.")] = None,
        alpha: Annotated[float, typer.Option(help="Significance level of the paired test.")] = 0.05,
        split: Annotated[str | None, typer.Option(help="Split to evaluate (default: the baseline's).")] = None,
        limit: Annotated[int | None, typer.Option(help="Rows to evaluate (default: the baseline's).")] = None,
        markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary (a pull-request comment).")] = None,
        junit: Annotated[Path | None, typer.Option(help="Write JUnit XML: one testcase per compared row.")] = None,
        flips: Annotated[int, typer.Option(help="Flipped examples to print per row and direction.")] = 10,
    ) -> None:
        """Regression gate: compare the candidate with the baseline row by row on the same examples. Exit 0
        when no row is significantly worse (and the options' limits hold), 1 when one is, 2 on a usage error."""
        from taskfit import api
        from taskfit.gate import Criteria
        from taskfit.gate import junit as to_junit
        from taskfit.gate import markdown as to_markdown

        try:
            ref = baseline or _task_name(task)
            result = api.check(task, ref, candidate, split=split, limit=limit, workspace=workspace(), progress=_progress,
                               criteria=Criteria(alpha=alpha, min_score=min_score, margin=margin,
                                                 max_parse_fail=max_parse_fail, max_cost_per_1k=max_cost_per_1k))
        except TaskfitError as e:
            print(f"error: {e}", file=sys.stderr)  # unwrapped, so file:line stays on one line
            raise typer.Exit(USAGE_ERROR) from None
        for w in result.warnings:
            err.print(f"warning: {w}", style="yellow")
        for r in result.rows:
            c = r.comparison
            mark = ("PASS", "green") if r.passed else ("FAIL", "red")
            out.print(Text.assemble((mark[0], f"bold {mark[1]}"), " ", c.summary()))
            for f in r.failures:
                out.print(f"  - {f}")
            _flip_lines("  right -> wrong", c.worse, flips, "--flips")
            _flip_lines("  wrong -> right", c.better, flips, "--flips")
        for path, render in ((markdown, to_markdown), (junit, to_junit)):
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)  # e.g. a CI job's reports/ folder
                path.write_text(render(result))
        n_failed = sum(not r.passed for r in result.rows)
        out.print(f"gate {'passed' if result.passed else 'failed'}: {len(result.rows) - n_failed} of "
                  f"{len(result.rows)} rows pass (baseline {ref})")
        raise typer.Exit(result.exit_code)

    @app.command()
    def diff(
        run_a: Annotated[str, typer.Argument(help="The baseline: run id, baseline name or saved file (one row).")],
        run_b: Annotated[str, typer.Argument(help="The candidate: run id, baseline name or saved file (one row).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON (docs/json.md).")] = False,
        limit: Annotated[int, typer.Option(help="Examples to print per group.")] = 20,
    ) -> None:
        """Compare two runs example by example: both scores, the difference with its 95% CI and p, then the
        examples that flipped (right -> wrong first), then other changed answers."""
        from taskfit import api

        c = api.diff(run_a, run_b, workspace=workspace())
        if as_json:
            print(json.dumps(c.to_json(), indent=2, ensure_ascii=False))
            return
        if c.coverage_warning():
            err.print(f"warning: {c.coverage_warning()}", style="yellow")
        out.print(c.summary())
        _flip_lines("right -> wrong", c.worse, limit, "--limit")
        _flip_lines("wrong -> right", c.better, limit, "--limit")
        _flip_lines("other answer, same score side", c.changed, limit, "--limit")

    baseline_app = typer.Typer(no_args_is_help=True, help="Named baselines: the runs `taskfit check` compares "
                               "against, kept in the workspace's database.")
    app.add_typer(baseline_app, name="baseline")

    @baseline_app.command("set")
    def baseline_set(
        name: Annotated[str, typer.Argument(help="The baseline's name (`taskfit check` defaults to the task's name).")],
        runs: Annotated[list[str], typer.Argument(help="Run ids (or prefixes), one per strategy x model row.")],
    ) -> None:
        """Name the runs a team compares against (replaces what NAME held)."""
        from taskfit.baselines import set_baseline

        b = set_baseline(workspace(), name, runs)
        out.print(f"baseline {b.name}: {', '.join(b.run_ids)}")

    @baseline_app.command("list")
    def baseline_list() -> None:
        """List the named baselines and their rows."""
        ws = workspace()
        t = Table(title="Baselines")
        for col in ("name", "created", "runs", "rows"):
            t.add_column(col)
        for b in ws.baselines.list():
            runs = [ws.runs.get(r) for r in b.run_ids]
            rows = ", ".join(f"{r.strategy} x {r.model}" if r else "(run deleted)" for r in runs)
            t.add_row(b.name, time.strftime("%Y-%m-%d %H:%M", time.localtime(b.created)), " ".join(b.run_ids), rows)
        out.print(t)

    @baseline_app.command("rm")
    def baseline_rm(name: Annotated[str, typer.Argument(help="The baseline to forget (its runs stay).")]) -> None:
        """Forget a named baseline."""
        if not workspace().baselines.remove(name):
            raise TaskfitError(f"no baseline {name!r}; see `taskfit baseline list`")
        out.print(f"removed baseline {name}")

    @baseline_app.command("export")
    def baseline_export(
        ref: Annotated[str, typer.Argument(help="A baseline name or run id.")],
        out_file: Annotated[Path, typer.Option("--out", "-o", help="The JSON file to write (commit it for CI).")],
    ) -> None:
        """Save a baseline's rows with their per-example results, so `taskfit check --baseline FILE` runs without
        the store (the format of `taskfit eval --json --per-example`)."""
        from taskfit.baselines import find_run, saved_rows

        ws = workspace()
        named = ws.baselines.get(ref)
        runs = [find_run(ws, r) for r in (named.run_ids if named else [ref])]
        out_file.write_text(json.dumps(saved_rows(ws, runs), indent=2, ensure_ascii=False) + "\n")
        out.print(f"wrote {len(runs)} rows to {out_file}")


def _progress(arm, done: int, total: int) -> None:
    """A line when a candidate row starts and when it is done (CI logs have no live progress bar)."""
    if done == total or done == 0:
        err.print(f"{arm.name}: {done}/{total} examples", style="dim")


def _task_name(task: str) -> str:
    """The default baseline's name: the task's ``name``."""
    from taskfit.taskfile import load_task

    return load_task(task).config.name
