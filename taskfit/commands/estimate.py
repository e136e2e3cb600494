"""`--dry-run` of `taskfit run`, `eval` and `optimize`: the cost estimate as a table; and the estimate beside
the actual figures after a real run."""

from __future__ import annotations

import json

from rich.table import Table

from taskfit.commands import workspace
from taskfit.errors import TaskfitError
from taskfit.estimate import Estimate, compare_runs, estimate_study
from taskfit.shard import Shard
from taskfit.terminal import console

# markup=False: strategy and model names are printed as given ("fake[/x]" is not a closing tag)
out = console()
if not out.is_terminal:
    out = console(width=200)
err = console(stderr=True)


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:,.0f} s" if s < 600 else f"{s / 60:,.1f} min"


def render(estimates: list[Estimate], title: str) -> Table:
    t = Table(title=title)
    for col in ("strategy", "model", "rows", "calls", "calls/query", "cached (free)", "tokens in", "tokens out",
                "dollars", "time"):
        t.add_column(col, justify="left" if col in ("strategy", "model") else "right")
    for e in estimates:
        t.add_row(e.strategy, e.model, str(e.n), f"{e.calls:,.0f}", f"{e.calls_per_query:.2f}", f"{e.cached_calls:,.0f}",
                  f"{e.tokens_in:,.0f}", f"{e.tokens_out:,.0f}", _money(e.dollars), _duration(e.seconds))
    if len(estimates) > 1:
        total = lambda k: sum(getattr(e, k) for e in estimates)  # noqa: E731
        t.add_row("total", "", "", f"{total('calls'):,.0f}", "", f"{total('cached_calls'):,.0f}",
                  f"{total('tokens_in'):,.0f}", f"{total('tokens_out'):,.0f}", _money(total("dollars")),
                  _duration(total("seconds")))
    return t


def dry_run(task: str, strategy, model, split, limit, *, as_json: bool = False, note: str = "",
            shard: Shard | None = None) -> None:
    """Print the estimate of a study (of one ``shard`` of its rows); no model is loaded and no call is made."""
    task_obj, estimates = estimate_study(task, workspace().cache, strategy_names=strategy, model_names=model,
                                         split=split, limit=limit, shard=shard)
    print_estimates(task_obj, estimates, as_json=as_json, note=note)


def print_estimates(task, estimates: list[Estimate], *, as_json: bool = False, note: str = "") -> None:
    if as_json:
        print(json.dumps([e.to_dict() for e in estimates], indent=2))
        return
    out.print(render(estimates, f"Estimate (dry run): {task.config.name}"))
    bases = sorted({e.time_basis for e in estimates})
    out.print(f"time per call: {'; '.join(bases)}. Calls already in the cache are free; loops are counted at "
              f"their limits.{' ' + note if note else ''}", highlight=False)
    for e in estimates:
        if e.if_generated is not None:
            g = e.if_generated
            out.print(f"{e.strategy} x {e.model}: scoring path {e.scoring}; if the server cannot score labels, "
                      f"it generates instead: {g['calls']:,.0f} calls, {g['tokens_in']:,.0f} tokens in, "
                      f"{g['tokens_out']:,.0f} tokens out, {_money(g['dollars'])}, {_duration(g['seconds'])}.",
                      highlight=False)


def estimate_before(task: str, strategy, model, split, limit, shard: Shard | None = None) -> list[Estimate]:
    """The estimate of a real run, kept to set beside its actual figures; none when it cannot be made."""
    try:
        return estimate_study(task, workspace().cache, strategy_names=strategy, model_names=model,
                              split=split, limit=limit, shard=shard)[1]
    except TaskfitError:  # a fault of the task file: the run that follows stops on it and says so, once
        return []
    except Exception as e:  # noqa: BLE001 - the estimate is a by-product: it is reported, never a reason to stop
        err.print(f"no cost estimate: {type(e).__name__}: {e}", style="dim", markup=False)
        return []


def show_after(estimates: list[Estimate], runs: list[tuple[str, str, str]]) -> None:
    """Store each run's estimate with its actual figures and print them side by side (on stderr)."""
    if not estimates:
        return
    compared = compare_runs(workspace().engine, estimates, runs)
    t = Table(title="Estimate vs actual (calls made, not cached)")
    for col in ("strategy", "model", "calls", "tokens in", "tokens out", "time"):
        t.add_column(col)
    for c in compared:
        cells = []
        for k in ("calls", "tokens_in", "tokens_out", "seconds"):
            est, act = c[k]
            fmt = _duration if k == "seconds" else (lambda x: f"{x:,.0f}")
            err_pct = f" ({100 * (est - act) / act:+.0f}%)" if act else ""
            cells.append(f"{fmt(est)} / {fmt(act)}{err_pct}")
        t.add_row(c["strategy"], c["model"], *cells)
    err.print(t)
