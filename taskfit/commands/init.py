"""`taskfit init`: ask a few questions about a data file and write a checked task file with a default study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from taskfit.terminal import console, safe_text

out = console(markup=True)


def register(app: typer.Typer) -> None:
    """Add `init` to the `taskfit` app."""

    @app.command()
    def init(
        data_file: Annotated[Path, typer.Argument(help="The rows: a .jsonl or .csv file.")],
        out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the task file.")] = Path("task.yaml"),
        output: Annotated[str | None, typer.Option(help="The field to predict (default: proposed from the data).")] = None,
        inputs: Annotated[list[str] | None, typer.Option("--input", help="An input field; repeatable "
                                                         "(default: every other field but `id`).")] = None,
        accuracy_target: Annotated[float | None, typer.Option(help="The score the task needs, 0-1.")] = None,
        queries_per_day: Annotated[int | None, typer.Option(help="Expected query volume.")] = None,
        latency_ms: Annotated[int | None, typer.Option(help="Slowest acceptable answer, in ms.")] = None,
        budget: Annotated[float | None, typer.Option(help="Monthly budget in dollars.")] = None,
        data_may_leave: Annotated[bool, typer.Option(help="Whether the data may be sent to a hosted model.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing: take the flags and the proposals.")] = False,
    ) -> None:
        """Propose the input and output fields, a label set, a metric and a study for DATA_FILE, ask about the
        goal, then write a commented task file and check it."""
        from taskfit.scaffold import Goals, propose, write_task

        p = propose(data_file, output, inputs)
        if not yes:
            t = Table(title=f"{data_file.name}: {len(p.rows)} rows, first 3")
            for f in p.fields:
                t.add_column(f, overflow="fold", max_width=40)
            for r in p.rows[:3]:
                t.add_row(*[str(r.get(f, ""))[:120] for f in p.fields])
            out.print(t)
            chosen = _ask_text("Field to predict", p.output)
            ins = _ask_text("Input fields (comma-separated)", ",".join(i for i in p.inputs if i != chosen))
            p = propose(data_file, chosen, [s.strip() for s in ins.split(",") if s.strip()])
            if p.labels:
                out.print(f"{len(p.labels)} labels: {', '.join(p.labels[:20])}{' ...' if len(p.labels) > 20 else ''}")
            elif typer.confirm(f"The outputs look like free text; score them with {p.metric}?", default=True) is False:
                p.metric = typer.prompt("Metric", default="exact_match")
            accuracy_target = _ask_float("Accuracy target (0-1, blank: none)", accuracy_target)
            queries_per_day = _ask_int("Queries per day (blank: unknown)", queries_per_day)
            latency_ms = _ask_int("Latency limit in ms (blank: none)", latency_ms)
            budget = _ask_float("Monthly budget in $ (blank: none)", budget)
            data_may_leave = typer.confirm("May the data leave this machine (hosted models)?", default=data_may_leave)
        goals = Goals(accuracy_target, queries_per_day, latency_ms, budget, data_may_leave)
        path = write_task(p, goals, out_path)
        out.print(f"[green]wrote[/green] {path} ({p.metric}, {len(p.labels) if p.labels else 'no'} labels); "
                  f"next: taskfit run {path} --dry-run", highlight=False)


def _ask_text(question: str, default: str) -> str:
    # the default comes from the data file's header: shown through safe_text, never sent raw to the terminal
    return typer.prompt(f"{question} [{safe_text(default)}]", default=default, show_default=False)


def _ask_float(question: str, default: float | None) -> float | None:
    answer = typer.prompt(question, default="" if default is None else str(default), show_default=False)
    return float(answer) if answer.strip() else None


def _ask_int(question: str, default: int | None) -> int | None:
    answer = typer.prompt(question, default="" if default is None else str(default), show_default=False)
    return int(answer) if answer.strip() else None
