"""The `taskfit` command: thin wrappers that parse options, call the library and print."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from taskfit.commands.export import TrackingUriOpt, TrackOpt
from taskfit.commands.report import LatencyOpt, VolumeOpt
from taskfit.errors import TaskfitError
from taskfit.shard import Shard
from taskfit.terminal import console, safe_text
from taskfit.types import PredictionRow

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compare prompt strategies (and, later, fine-tuned models) on your own task, with evidence.")
out = console()
if not out.is_terminal:  # piped output: long table rows stay on one line (the leaderboard: 120 columns)
    out = console(width=200)
err = console(stderr=True)

TaskArg = Annotated[str, typer.Argument(help="Path to the task file (YAML).")]
StrategyOpt = Annotated[list[str] | None, typer.Option("--strategy", "-s", help="Strategy row (or registered name); repeatable.")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", "-m", help="Model row name, local folder, .gguf or 'bundled'; repeatable.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the expected calls, tokens, dollars and time per "
                                          "row, then stop: no model is loaded and no call is made.")]
SplitOpt = Annotated[str | None, typer.Option(help="Split to score: train, dev or test (default: the task's).")]
LimitOpt = Annotated[int | None, typer.Option(help="Score only the first N rows of the split (0: all rows, "
                                                    "overriding the task file's limit).")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="Score only shard I of N of the rows (I/N, 0-based, by a hash of each example id): one "
    "job of many; `taskfit merge-stores` combines the shards' stores (docs/cluster.md).")]
WideOpt = Annotated[bool, typer.Option("--wide", help="One leaderboard table with every column (wider than 120).")]


@app.callback()
def _root(db: Annotated[str | None, typer.Option(
        "--db", envvar="TASKFIT_DB", help="Database URL (sqlite:///file.db, postgresql+psycopg://user@host/db); "
        "default: taskfit.db in $TASKFIT_HOME (./.taskfit).")] = None) -> None:
    from taskfit.commands import use_database

    use_database(db)


def _study(task: str, strategy, model, split, limit, as_json: bool, title: str, *, with_tuning: bool = False,
           train_limit: int | None = None, report: bool = False, wide: bool = False, volume: str | None = None,
           latency_p50_ms: float | None = None, per_example: bool = False, track: str | None = None,
           tracking_uri: str | None = None, shard: str | None = None) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from taskfit import api
    from taskfit.commands import workspace
    from taskfit.commands.export import end_tracking, start_tracking
    from taskfit.leaderboard import render
    from taskfit.stages import Stages

    shard_part = Shard.parse(shard) if shard else None  # a bad --shard stops here, before anything is loaded
    tracker = start_tracking(track, tracking_uri)  # connected before the first model call
    bars: dict[str, int] = {}
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=False) as progress:
        last_line = [0.0]

        def on_progress(arm, done, total):
            if arm.name not in bars:
                bars[arm.name] = progress.add_task(arm.name, total=total)
            progress.update(bars[arm.name], completed=done)
            # a log file gets no live bar: print a line now and then instead
            if not err.is_terminal and (done == total or time.perf_counter() - last_line[0] > 15):
                last_line[0] = time.perf_counter()
                err.print(f"{arm.name}: {done}/{total} ({time.perf_counter() - started:.0f} s)", highlight=False)

        from taskfit.commands.estimate import estimate_before, show_after

        estimates = estimate_before(task, strategy, model, split, limit, shard_part)
        err.print("loading task, data and models...", style="dim")

        def on_step(name, p):
            if p["step"] == 1 or p["step"] % 10 == 0:
                err.print(f"{name}: step {p['step']:.0f}, epoch {p['epoch']:.2f}, loss {p['loss']:.4f} "
                          f"({p['time_s']:.0f} s)", style="dim", highlight=False)

        board = api.evaluate(task, strategy, model, split=split, limit=limit, workspace=workspace(),
                             tuned=with_tuning, train_limit=train_limit, progress=on_progress,
                             log=lambda m: err.print(m, style="dim", highlight=False), on_step=on_step,
                             on_run=tracker.on_run if tracker else None, shard=shard_part)
    show_after(estimates, [(r.strategy, r.model, r.run_id) for r in board.rows])
    if as_json:
        if per_example:  # what `taskfit check --baseline FILE` needs without the store
            from taskfit.baselines import saved_rows

            print(json.dumps(saved_rows(workspace(), board.runs), indent=2, ensure_ascii=False))
            end_tracking(tracker)
            return
        print(json.dumps(board.to_json(), indent=2))
        end_tracking(tracker)
        return
    width = None if out.is_terminal else 300 if wide else 120
    out.print(render(board.rows, title=f"{title}: {board.task} ({board.metric})", wide=wide), width=width)
    out.print(board.verdict, highlight=False, width=width)
    if any((r.tune or {}).get("distill") for r in board.rows):
        from taskfit.distill.board import render as render_students

        out.print(render_students(board.rows), width=width)
    stages = Stages(list(board.stages))
    if report:  # the main job ends with the decision report, priced at the volume asked for
        from taskfit.commands.report import cost_table, parse_volume_option
        from taskfit.report import report_data, save

        with stages("report"):
            data = report_data(workspace(), [r.run_id for r in board.rows], volume=parse_volume_option(volume),
                               latency_p50_ms=latency_p50_ms)
        out.print(cost_table(data.recommendation), width=width)
        out.print(data.recommendation.text, highlight=False, width=width)
        for lc in data.curves:  # the task file's `curve:` entries, each with from how many rows it matches
            out.print(lc.statement(), highlight=False, width=width)
        with stages("report"):
            path = save(data, workspace=workspace())
        out.print(f"report: {path}", highlight=False)
    end_tracking(tracker)
    err.print(f"finished in {time.perf_counter() - started:.0f} s; `taskfit show RUN` lists the predictions", style="dim")
    if with_tuning:  # a study: where its time went
        err.print(f"stage times (wall, and this process's CPU): {stages.text()}", style="dim", highlight=False)


@app.command()
def run(task: TaskArg, limit: LimitOpt = None,
        tune: Annotated[bool, typer.Option(help="Train the task file's `tuning:` models (trained once, then "
                                                "reused) and put them on the leaderboard.")] = True,
        train_limit: Annotated[int | None, typer.Option(help="Train each tuned model on at most N train rows "
                                                        "(a quick look; a different model than the full run).")] = None,
        wide: WideOpt = False, dry_run: DryRunOpt = False, volume: VolumeOpt = None,
        latency_p50_ms: LatencyOpt = None, shard: ShardOpt = None, track: TrackOpt = None,
        tracking_uri: TrackingUriOpt = None) -> None:
    """Run the study the task file declares (every strategy x model, and its tuned models) and print the
    leaderboard."""
    if dry_run:
        from taskfit.commands.estimate import dry_run as print_estimate

        return print_estimate(task, None, None, None, limit, note="Fine-tuned rows are not included: "
                              "`taskfit plan` predicts their training time and memory." if tune else "",
                              shard=Shard.parse(shard) if shard else None)
    # a shard's report would describe a part of the rows: the report belongs to the merged store
    _study(task, None, None, None, limit, False, "Study", with_tuning=tune, train_limit=train_limit,
           report=shard is None, wide=wide, volume=volume, latency_p50_ms=latency_p50_ms, shard=shard,
           track=track, tracking_uri=tracking_uri)


@app.command("eval")
def eval_(task: TaskArg, strategy: StrategyOpt = None, model: ModelOpt = None, split: SplitOpt = None,
          limit: LimitOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
          wide: WideOpt = False, dry_run: DryRunOpt = False, shard: ShardOpt = None,
          per_example: Annotated[bool, typer.Option("--per-example", help="With --json: add each row's per-example "
                                                    "results (a baseline file for `taskfit check`).")] = False,
          track: TrackOpt = None, tracking_uri: TrackingUriOpt = None) -> None:
    """Evaluate strategies x models on a split and print one leaderboard."""
    if dry_run:
        from taskfit.commands.estimate import dry_run as print_estimate

        return print_estimate(task, strategy, model, split, limit, as_json=as_json,
                              shard=Shard.parse(shard) if shard else None)
    if per_example and not as_json:
        raise TaskfitError("--per-example adds to the --json output: pass --json too")
    _study(task, strategy, model, split, limit, as_json, "Leaderboard", wide=wide, per_example=per_example,
           track=track, tracking_uri=tracking_uri, shard=shard)


@app.command()
def validate(task: TaskArg) -> None:
    """Check a task file, its data and its templates without calling a model."""
    from taskfit.study import prepare

    t, ds = prepare(task)
    ds.split(t.config.split)  # the split the study is scored on must have rows
    sizes = ", ".join(f"{k}={len(v)}" for k, v in ds.splits.items() if v)
    out.print(Text.assemble(("ok", "green"), f" {t.config.name}: {sizes}; data hash {ds.hash}"))
    if ds.skipped:
        err.print(ds.skipped_note(), style="yellow", highlight=False, soft_wrap=True)


@app.command()
def runs(limit: Annotated[int, typer.Option(help="How many recent runs.")] = 30) -> None:
    """List past runs, newest first."""
    from taskfit.commands import workspace

    store = workspace().runs
    t = Table(title="Runs")
    for col in ("run", "created", "task", "strategy", "model", "split", "rows", "status"):
        t.add_column(col)
    for r in store.list(limit):
        shard = r.config.get("shard")  # a shard's rows are a part of the split: say which
        part = f" (shard {shard['index']}/{shard['count']})" if shard else ""
        t.add_row(r.id, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), r.task_name, r.strategy, r.model,
                  r.split, f"{store.progress(r.id)}/{r.n_total}{part}", r.status)
    out.print(t)
    tunes = workspace().tunes.list(limit)
    if tunes:
        tt = Table(title="Tuned models (planned vs measured)")
        for col in ("model", "created", "task", "method", "base", "train time", "peak MB plan/meas (err)",
                    "s/epoch plan/meas (err)", "status"):
            tt.add_column(col)
        for r in tunes:
            res, plan, meas = r.result, r.result.get("plan") or {}, r.result.get("measured") or {}
            tt.add_row(f"tuned:{r.id}", time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), r.task_name,
                       f"{r.method} {r.objective}", r.base_model,
                       f"{res['train_time_s']:.0f} s" if res.get("train_time_s") else "",
                       _plan_cell(plan.get("peak_mem_mb"), meas.get("peak_mem_mb")),
                       _plan_cell(plan.get("time_per_epoch_s"), meas.get("time_per_epoch_s")), r.status)
        out.print(tt)


def _plan_cell(planned, measured) -> str:
    if planned is None:
        return ""
    if not measured:
        return f"{planned:,.0f} / -"
    return f"{planned:,.0f} / {measured:,.0f} ({100 * (planned - measured) / measured:+.0f}%)"


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix), or tuned:<id>.")],
         example: Annotated[str | None, typer.Option("--example", "-e", help="Show one example with its full trace.")] = None,
         limit: Annotated[int, typer.Option(help="Rows to list.")] = 40) -> None:
    """Show a run's predictions, wrong ones first, or one example's full trace."""
    from taskfit.commands import workspace

    store = workspace().runs
    if run_id.startswith("tuned:"):
        from taskfit.commands.tune import print_tune

        print_tune(workspace().tunes.get(run_id.removeprefix("tuned:")))
        return
    run = store.get(run_id)
    if run is None:
        raise TaskfitError(f"no run (or more than one) matches {run_id!r}; see `taskfit runs`")
    preds = store.predictions(run.id)
    if example:
        matches = [p for p in preds if p.example_id == example]
        if not matches:
            raise TaskfitError(f"run {run.id} has no example {example!r}")
        _show_trace(matches[0])
        return
    preds.sort(key=lambda p: (p.score, p.idx))
    t = Table(title=f"run {run.id}: {run.strategy} x {run.model} on {run.task_name}/{run.split} "
              f"({len(preds)}/{run.n_total}, {run.status})")
    for col in ("example", "input", "target", "answer", "score", "calls", "note"):
        t.add_column(col, overflow="fold")
    for p in preds[:limit]:
        note = "call failed" if p.failed else ("parse failed" if p.parse_failed else "")
        text = " | ".join(str(v) for v in p.inputs.values())
        # escaped before the table is laid out, so that its columns fit the escapes
        cells = [safe_text(c) for c in (p.example_id, text[:120], p.target[:60], str(p.answer)[:60])]
        t.add_row(*cells, f"{p.score:.2f}", str(p.calls), note)
    out.print(t)
    if run.config["model"].get("backend") == "tuned":  # what training changed, on a few examples
        from taskfit.commands.tune import print_before_after

        rec = workspace().tunes.get(run.config["model"]["path"].removeprefix("tuned:"))
        print_before_after(rec.result.get("before_after") or [])


def _show_trace(p: PredictionRow) -> None:
    out.rule(f"example {p.example_id}  score {p.score:.2f}")
    out.print({"inputs": p.inputs, "target": p.target, "answer": p.answer, "output": p.output})
    trace = p.trace or {}
    for i, call in enumerate(trace.get("calls", []), start=1):
        out.rule(f"call {i}: {call['step']} ({call['kind']}){' cached' if call['cached'] else ''}")
        for m in call["messages"]:  # Text, not markup: prompts may contain [brackets]
            extra = f" {m['tool_calls']}" if m.get("tool_calls") else ""
            out.print(Text.assemble((m["role"], "bold"), ": ", str(m.get("content") or ""), extra), highlight=False)
        if call["kind"] == "tool":
            out.print(Text.assemble(("tool ", "bold"), str(call["params"].get("name", "")), " ",
                                    json.dumps(call["params"].get("arguments", {}))), highlight=False)
        out.print(Text.assemble(("-> output", "bold"), ": ", str(call["output"])), highlight=False)
        shared = f" (share of a call made for {call['shared_by']} examples)" if call.get("shared_by", 1) > 1 else ""
        out.print(f"tokens {call['tokens_in']:.0f}/{call['tokens_out']:.0f}, {call['latency_ms']:.0f} ms{shared}"
                  f"{', error: ' + call['error'] if call.get('error') else ''}", style="dim")
    if trace.get("details"):
        out.print(trace["details"])
    for name, reason in ((p.scoring or {}).get("reasons") or {}).items():
        out.print(Text.assemble((f"{name}: ", "bold"), str(reason)), highlight=False)


@app.command("strategies")
def list_strategies() -> None:
    """List the registered strategies."""
    from taskfit.strategies import describe, strategies

    t = Table(title="Strategies")
    t.add_column("name")
    t.add_column("what it does")
    for name in strategies.names():
        t.add_row(name, describe(name))
    out.print(t)


@app.command("metrics")
def list_metrics() -> None:
    """List the registered metrics."""
    import importlib

    from taskfit.metrics import metrics

    t = Table(title="Metrics")
    t.add_column("name")
    t.add_column("what it measures")
    for name in metrics.names():
        spec = metrics._specs.get(name, "")
        doc = (importlib.import_module(spec.partition(":")[0]).__doc__ or "").strip().splitlines() if spec else []
        t.add_row(name, doc[0] if doc else "")
    out.print(t)


def _register_commands() -> None:
    import importlib

    from taskfit.commands import COMMANDS

    for name in COMMANDS:
        importlib.import_module(f"taskfit.commands.{name}").register(app)


_register_commands()


# library loggers whose warnings concern optional kernels or their own deprecations, not the user's run
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def main() -> None:
    import logging
    import os

    # the libraries' own progress bars (weights loading) would interleave with taskfit's progress lines
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # models are local folders, .gguf files or the bundled ones: a name that is not on disk must not turn
    # into a download (HF_HUB_OFFLINE=0 lets transformers reach the hub again)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # MLflow writes a "View run" line per finished run to stdout, which `--json` keeps for the rows
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app()
    except TaskfitError as e:
        print(f"error: {safe_text(str(e))}", file=sys.stderr)  # unwrapped, so file:line stays on one line
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished examples are stored; run the same command to resume", style="yellow")
        sys.exit(130)


if __name__ == "__main__":
    main()
