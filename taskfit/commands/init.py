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
        inputs: Annotated[list[str] | None, typer.Option("--input", help="An input field; repeatable (default: every "
                                                         "other field but identifiers, lists and objects).")] = None,
        describe: Annotated[str | None, typer.Option(help="What the task is, in a sentence: the task's description "
                                                     "and the prompt's instruction (default: composed from the "
                                                     "field names and labels).")] = None,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Model that may interview you about the task "
                                                  "(asked, not with --yes): bundled, a local folder or .gguf, or a "
                                                  ".yaml/.json file holding one `models:` entry.")] = None,
        accuracy_target: Annotated[float | None, typer.Option(help="The score the task needs, 0-1.")] = None,
        queries_per_day: Annotated[int | None, typer.Option(help="Expected query volume.")] = None,
        latency_ms: Annotated[int | None, typer.Option(help="Slowest acceptable answer, in ms.")] = None,
        budget: Annotated[float | None, typer.Option(help="Monthly budget in dollars.")] = None,
        data_may_leave: Annotated[bool, typer.Option(help="Whether the data may be sent to a hosted model.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Ask nothing: take the flags and the proposals.")] = False,
    ) -> None:
        """Propose the input and output fields, a label set, a metric, an instruction and a study for DATA_FILE,
        ask about the task and the goal, then write a commented task file and check it."""
        from taskfit.scaffold import Goals, propose, train_rows, tuning_plan, write_task

        p = propose(data_file, output, inputs, describe or "")
        if not yes:
            t = Table(title=f"{data_file.name}: {len(p.rows)} rows, first 3")
            for f in p.fields:
                t.add_column(f, overflow="fold", max_width=40)
            for r in p.rows[:3]:
                t.add_row(*[str(r.get(f, ""))[:120] for f in p.fields])
            out.print(t)
            chosen = _ask_text("Field to predict", p.output)
            if chosen != p.output:
                p = propose(data_file, chosen, None, describe or "")
            for f, why in p.left_out.items():
                out.print(f"{safe_text(f)} left out: {why}", highlight=False)
            ins = _ask_text("Input fields (comma-separated)", ",".join(p.inputs))
            p = propose(data_file, chosen, [s.strip() for s in ins.split(",") if s.strip()], describe or "")
            if p.labels:
                out.print(f"{len(p.labels)} labels: {', '.join(p.labels[:20])}{' ...' if len(p.labels) > 20 else ''}")
            elif typer.confirm(f"The outputs look like free text; score them with {p.metric}?", default=True) is False:
                p.metric = typer.prompt("Metric", default="exact_match")
            _ask_instruction(p, describe, model)
            accuracy_target = _ask_float("Accuracy target (0-1, blank: none)", accuracy_target)
            queries_per_day = _ask_int("Queries per day (blank: unknown)", queries_per_day)
            latency_ms = _ask_int("Latency limit in ms (blank: none)", latency_ms)
            budget = _ask_float("Monthly budget in $ (blank: none)", budget)
            data_may_leave = typer.confirm("May the data leave this machine (hosted models)?", default=data_may_leave)
        goals = Goals(accuracy_target, queries_per_day, latency_ms, budget, data_may_leave)
        path = write_task(p, goals, out_path)
        out.print(f"[green]wrote[/green] {path} ({p.metric}, {len(p.labels) if p.labels else 'no'} labels); "
                  f"next: taskfit run {path} --dry-run", highlight=False)
        if plan := tuning_plan(p, train_rows(p)):  # said before anyone starts a long training
            out.print(plan.note(), highlight=False)


def _ask_instruction(p, describe: str | None, model: str | None) -> None:
    """Ask what the task is, optionally let a model interview the user, and settle the instruction."""
    from taskfit.scaffold import compose_instruction

    if describe is None:
        p.describe = typer.prompt("The task in a sentence (blank: composed from the fields)", default="",
                                  show_default=False).strip()
        p.instruction = compose_instruction(p)
    if typer.confirm("Let the model interview you?", default=False):
        from taskfit.backends import build_backend
        from taskfit.commands import workspace
        from taskfit.interview import interview, model_spec
        from taskfit.lm import LM

        ws = workspace()
        lm = LM(build_backend(model_spec(model or "bundled"), ws), ws.cache)
        out.print("Answer each question (blank: no more questions).")
        talk = interview(lm, p, lambda q: typer.prompt(q, default="", show_default=False))
        p.instruction, p.instruction_note = talk.instruction, f"drafted by {lm.model_id} from the answers above"
        p.interview = list(zip(talk.questions, talk.answers, strict=True))
    edited = _ask_text("Instruction", p.instruction).strip()
    if edited and edited != p.instruction:
        p.instruction, p.instruction_note = edited, "as written at `taskfit init`"


def _ask_text(question: str, default: str) -> str:
    # the default comes from the data file's header: shown through safe_text, never sent raw to the terminal
    return typer.prompt(f"{question} [{safe_text(default)}]", default=default, show_default=False)


def _ask_float(question: str, default: float | None) -> float | None:
    answer = typer.prompt(question, default="" if default is None else str(default), show_default=False)
    return float(answer) if answer.strip() else None


def _ask_int(question: str, default: int | None) -> int | None:
    answer = typer.prompt(question, default="" if default is None else str(default), show_default=False)
    return int(answer) if answer.strip() else None
