"""`taskfit optimize` (search for a better prompt within a call budget) and `taskfit optimizations` (saved results)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from taskfit.commands import workspace
from taskfit.commands.export import TrackingUriOpt, TrackOpt, end_tracking, start_tracking
from taskfit.errors import TaskfitError
from taskfit.terminal import console

out = console()  # prompts, names and model text are printed as given, never read as markup
if not out.is_terminal:
    out = console(width=200)
err = console(stderr=True)


def _progress_line(event: dict) -> str | None:
    """One stderr line per search event: calls spent / budget, and the current best with its CI."""
    calls = f"[{event['calls']:>5}/{event['budget']} calls]"
    best = event.get("best")
    lead = f" | best {best['key']} {best['mean']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}] on {best['n']} dev rows" \
        if best else ""
    kind = event["event"]
    if kind == "candidate":
        return f"{calls} candidate {event['key']} ({event['origin']}): {event['describe']}"
    if kind == "bootstrap":
        return f"{calls} bootstrap {event['base']}: {event['kept']} of {event['rows']} train rows answered correctly"
    if kind == "rung_start":
        return f"{calls} first rung: {event['alive']} candidates on {event['rows']} dev rows"
    if kind == "proposed":
        return f"{calls} proposal round {event['round']}: {event['n']} usable new instruction(s)"
    if kind == "evaluated":
        return f"{calls} {event['key']} scored on {event['rows']} dev rows{lead}"
    if kind == "dropped":
        return f"{calls} dropped {event['key']}: {event['why']}"
    if kind == "rung":
        return f"{calls} rung done at {event['rows']} dev rows, {event['alive']} candidate(s) left{lead}"
    if kind == "search_done":
        return f"{calls} search finished ({event['stop']}); winner {event['winner']}"
    return None


def _ci(r: dict, score: str = "score") -> str:
    return f"{r[score]:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def print_record(record, search_table: list[dict] | None = None) -> None:
    """The candidates, the optimized prompt, and the dev-vs-test comparison with the baseline."""
    cands = search_table or record.candidates
    t = Table(title=f"Candidates (optimization {record.id}, {record.task_name}, {record.model})", title_justify="left")
    for col, just in [("cand", "left"), ("origin", "left"), ("program", "left"), ("dev n", "right"),
                      ("dev score [95% CI]", "right"), ("calls", "right"), ("status", "left")]:
        t.add_column(col, justify=just, overflow="fold")
    for c in cands:
        t.add_row(c["key"], c["origin"], c["describe"], str(c["n"]), _ci(c, "mean") if c["n"] else "-", str(c["calls"]),
                  c["status"])
    out.print(t)
    out.rule(f"optimized prompt (strategy optimized:{record.id})")
    out.print(Text(record.prompt), highlight=False)
    out.rule()
    rep = record.report
    if "test" in rep:
        t = Table(title="Held-out comparison (test split, never seen by the search)", title_justify="left")
        for col in ("program", "dev n", "dev score [95% CI]", "test n", "test score [95% CI]", "dev - test", "p vs best",
                    "run"):
            t.add_column(col, justify="left" if col in ("program", "run") else "right")
        for key, name in (("winner", f"optimized:{record.id}"), ("baseline", "zero_shot (baseline)")):
            d, s = rep["dev"][key], rep["test"][key]
            p = s["p_vs_best"]
            t.add_row(name, str(d["n"]), _ci(d, "mean"), str(s["n"]), _ci(s), f"{rep['gap'][key]:+.3f}",
                      "best" if p is None else f"{p:.3f}" + (" *" if p < 0.05 else ""), s["run_id"])
        out.print(t)
        gain = rep["test"]["winner"]["score"] - rep["test"]["baseline"]["score"]
        out.print(f"Test gain over the zero-shot baseline: {gain:+.3f}.", highlight=False)
    out.print(f"Search: {record.calls} of {record.budget} budgeted calls ({record.calls_sent} sent to the model, "
              f"{record.calls - record.calls_sent} answered by the call cache); stopped: {rep.get('stop')}; "
              f"{rep.get('search_s', 0):.0f} s." + (f" Test comparison: {rep['test']['winner']['calls'] + rep['test']['baseline']['calls']} "
                                                   f"calls (not budgeted), {rep['test_s']:.0f} s." if "test" in rep else ""),
              highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def optimize(
        task: Annotated[str, typer.Argument(help="Path to the task file (YAML).")],
        budget: Annotated[int, typer.Option(help="Most model calls the search may make (cache hits included).")],
        model: Annotated[str | None, typer.Option("--model", "-m", help="Model to optimize for: a model row name, "
                                                  "local folder, .gguf or 'bundled' (default: the task's first).")] = None,
        teacher: Annotated[str | None, typer.Option(help="Model that writes instruction proposals "
                                                    "(default: the model being optimized).")] = None,
        strategies: Annotated[list[str] | None, typer.Option(
            "--strategies", help="Base strategies to choose among: zero_shot, few_shot, cot (repeat or comma-separate; "
            "default zero_shot,few_shot).")] = None,
        instructions: Annotated[int, typer.Option(help="Instructions to ask the proposer for, per round.")] = 4,
        rounds: Annotated[int, typer.Option(help="Proposal rounds (later ones see earlier scores; they run while "
                                            "the budget lasts).")] = 3,
        k: Annotated[int, typer.Option(help="Demonstrations per few-shot candidate.")] = 4,
        demo_sets: Annotated[int, typer.Option(help="Demo sets tried per base strategy.")] = 2,
        dev_size: Annotated[int | None, typer.Option(help="Dev rows (default: the dev split, else half of train, "
                                                     "at most 200).")] = None,
        limit: Annotated[int | None, typer.Option(help="Test rows for the final comparison (default: the task's "
                                                  "limit; 0: all).")] = None,
        seed: Annotated[int, typer.Option(help="Seed for the dev split, demos and proposals.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the saved result as JSON.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expected calls, tokens, dollars and "
                                              "time, then stop: no model is loaded and no call is made.")] = False,
        track: TrackOpt = None, tracking_uri: TrackingUriOpt = None,
    ) -> None:
        """Search for a better prompt within a call budget, then compare it with zero-shot on the test split."""
        from taskfit.optimize.run import optimize as run_optimize
        from taskfit.optimize.search import OptimizeConfig

        names = [s.strip() for item in (strategies or ["zero_shot,few_shot"]) for s in item.split(",") if s.strip()]
        try:
            config = OptimizeConfig(budget=budget, strategies=names, instructions=instructions, rounds=rounds, k=k,
                                    demo_sets=demo_sets, dev_size=dev_size, seed=seed)
        except ValueError as e:
            raise TaskfitError(f"invalid option: {e}") from None
        if dry_run:
            from taskfit.commands.estimate import print_estimates
            from taskfit.estimate import estimate_optimize
            task_obj, estimates = estimate_optimize(task, workspace().cache, config, model=model, limit=limit)
            return print_estimates(task_obj, estimates, as_json=as_json)
        tracker = start_tracking(track, tracking_uri)  # the test split's two rows, as each finishes
        started = time.perf_counter()

        def on_event(event: dict) -> None:
            line = _progress_line(event)
            if line:
                err.print(line, highlight=False, markup=False, soft_wrap=True)

        def on_test(arm, done, total):
            if done == total:
                err.print(f"test split: {arm.name} {done}/{total} rows", highlight=False)

        outcome = run_optimize(task, config, workspace=workspace(), model=model, teacher=teacher, limit=limit,
                               progress=on_event, test_progress=on_test, on_run=tracker.on_run if tracker else None)
        if as_json:
            print(json.dumps(outcome.record.__dict__, indent=2, default=str))
            end_tracking(tracker)
            return
        print_record(outcome.record)
        out.print(f"Use it: taskfit eval {task} --strategy optimized:{outcome.record.id}  "
                  f"(wall time {time.perf_counter() - started:.0f} s)", highlight=False)
        end_tracking(tracker)

    @app.command()
    def optimizations(
        run_id: Annotated[str | None, typer.Argument(help="Show one optimization (id or unique prefix).")] = None,
    ) -> None:
        """List saved optimizations, or show one: candidates, prompt, dev-vs-test comparison."""
        store = workspace().optimizations
        if run_id:
            record = store.get(run_id)
            if record is None:
                raise TaskfitError(f"no optimization (or more than one) matches {run_id!r}; see `taskfit optimizations`")
            print_record(record)
            return
        t = Table(title="Optimizations")
        for col in ("id", "created", "task", "model", "calls/budget", "winner", "dev", "test", "baseline test", "status"):
            t.add_column(col)
        for r in store.list():
            test = r.report.get("test", {})
            t.add_row(r.id, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), r.task_name, r.model,
                      f"{r.calls}/{r.budget}", r.report.get("winner", ""),
                      f"{r.report['dev']['winner']['mean']:.3f}" if "dev" in r.report else "",
                      f"{test['winner']['score']:.3f}" if test else "", f"{test['baseline']['score']:.3f}" if test else "",
                      r.status)
        out.print(t)
