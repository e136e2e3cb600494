"""One table for a study: score with 95% CI, paired test against the best row, latency, tokens, calls, cost."""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING, Any

from taskfit.calibration import UnitCost, uncertainty
from taskfit.costs import TIME_TOLERANCE, model_seconds_per_1k
from taskfit.metrics import build_metric
from taskfit.plugins import stored_model
from taskfit.stats import paired_p, score_interval
from taskfit.store import RunRecord
from taskfit.taskfile import MetricSpec
from taskfit.types import JSON_KEYS, Footprint, LeaderboardRow, PredictionRow

if TYPE_CHECKING:
    from taskfit.tuning.store import TuneStore
    from taskfit.workspace import Workspace

__all__ = ["JSON_KEYS", "LeaderboardRow", "rows", "verdict", "render"]


def rows(workspace: Workspace, runs: list[RunRecord]) -> list[LeaderboardRow]:
    """Leaderboard rows of ``runs`` (stored in ``workspace``), best score first. ``p_vs_best`` is None for the
    best row itself."""
    preds = {r.id: workspace.runs.predictions(r.id, with_trace=False) for r in runs}
    footprints = workspace.runs.footprints([r.id for r in runs])
    out = []
    binary: dict[str, bool] = {}
    for run in runs:
        ps = preds[run.id]
        metric = MetricSpec(**run.config["task"]["metrics"][0])
        stored = run.config.get("binary")  # runs stored before it was recorded rebuild the metric to know
        binary[run.id] = stored if stored is not None else build_metric(metric.name, metric.options, workspace).binary
        scores = [p.score for p in ps]
        n = len(ps)
        lo, hi = score_interval(scores, binary[run.id]) if n else (0.0, 0.0)
        model = stored_model(run.config["model"])
        tin = _mean([p.tokens_in for p in ps])
        tout = _mean([p.tokens_out for p in ps])
        lat = [p.latency_ms for p in ps]
        calls = sum(p.calls for p in ps)
        spent = [p.scoring or {} for p in ps]
        out.append(LeaderboardRow(
            strategy=run.strategy, model=run.model, n=n, metric=metric.name,
            score=_mean(scores), ci_low=lo, ci_high=hi, p_vs_best=None,
            latency_p50_ms=statistics.median(lat) if lat else 0.0,
            tokens_in=tin, tokens_out=tout, calls=calls, calls_per_query=calls / n if n else 0.0,
            cache_hits=sum(p.cache_hits for p in ps),
            cost_per_1k=1000 * (tin * model.price_in_per_1m + tout * model.price_out_per_1m) / 1e6,
            time_per_1k_s=_mean(lat) if lat else 0.0,  # mean ms per query x 1000 queries / 1000 ms per s
            parse_fail_rate=_mean([p.parse_failed for p in ps]),
            failed=sum(p.failed for p in ps), mode=run.config.get("mode"), run_id=run.id,
            metrics=_metric_means(ps),
            judge_calls=sum(s.get("calls", 0) for s in spent),
            judge_tokens_in=_mean([s.get("tokens_in", 0.0) for s in spent]),
            judge_tokens_out=_mean([s.get("tokens_out", 0.0) for s in spent]),
            judge_cost_per_1k=1000 * _mean([s.get("cost", 0.0) for s in spent]),
            **scored_via(run), **serving(footprints.get(run.id)),
            tune=tune_summary(workspace.tunes, model.options.get("path")) if model.backend == "tuned"
            or (model.options.get("path") or "").startswith("tuned:") else None,
        ))
        out[-1] = priced_by_work(out[-1], workspace.unit_costs.get(run.model_id, (run.config.get("backend") or {})
                                                                  .get("device", "cpu")))
    out.sort(key=lambda r: -r.score)
    if out:
        best = out[0]
        best_by_id = {p.example_id: p.score for p in preds[best.run_id]}
        for i, r in enumerate(out[1:], start=1):
            pairs = [(best_by_id[p.example_id], p.score) for p in preds[r.run_id] if p.example_id in best_by_id]
            if pairs:
                a, b = zip(*pairs, strict=True)
                p_value = paired_p(list(a), list(b), binary[best.run_id] and binary[r.run_id])
                out[i] = dataclasses.replace(r, p_vs_best=p_value)
    return out


def priced_by_work(row: LeaderboardRow, units: dict[str, UnitCost]) -> LeaderboardRow:
    """The row with its model time from its work: prompt tokens encoded x seconds per forward token plus
    tokens generated x seconds per generated token (``units``: the model's calibrated unit costs), and the
    basis its cost is priced on (work, measured time, or a token bill alone)."""
    serving = None
    if "forward" in units and (not row.tokens_out or "generate" in units):
        spent = [units["forward"], *([units["generate"]] if row.tokens_out else [])]
        serving = 1000 * (row.tokens_in * units["forward"].seconds_per_token
                          + row.tokens_out * (units["generate"].seconds_per_token if row.tokens_out else 0.0))
    tune = row.tune or {}
    trained_by_work = not tune or tune.get("train_work_s") is not None
    if serving is not None and trained_by_work:
        unit = (tune.get("train_unit_cost") or {}).get("spread")
        spreads = [c.spread for c in spent] + ([unit] if unit is not None else [])
        return dataclasses.replace(row, work_time_per_1k_s=serving, cost_basis="work",
                                   cost_uncertainty=uncertainty(spreads, TIME_TOLERANCE))
    basis = "tokens" if row.cost_per_1k and serving is None and not units else "time"
    return dataclasses.replace(row, work_time_per_1k_s=serving, cost_basis=basis)


def _margin(a: LeaderboardRow, b: LeaderboardRow) -> float:
    """How far two rows' model times may be off: their calibrations' uncertainty when both are priced by
    work, else the uncertainty of measured time."""
    if a.cost_uncertainty is None or b.cost_uncertainty is None:
        return TIME_TOLERANCE
    return max(a.cost_uncertainty, b.cost_uncertainty)


def scored_via(run: RunRecord) -> dict[str, Any]:
    """How a row got its answers: ``generate`` (parsed replies), the server's label-scoring path, or ``local``
    (in-process log-likelihood); why a server could not score labels; which server ran the model."""
    backend = run.config.get("backend") or {}
    mode = run.config.get("mode")
    via = "generate" if mode == "generate" else (backend.get("score_via") or "local")
    return {"score_via": via, "score_via_reason": backend.get("score_via_reason") or None,
            "server": backend.get("server")}


def serving(fp: Footprint | None) -> dict[str, Any]:
    """A row's serving footprint fields from a run's measured footprint (`taskfit shrink`)."""
    if fp is None:
        return {}
    return {"precision": fp.precision, "size_mb": fp.size_mb, "serving_peak_mb": fp.peak_mb,
            "ms_per_query": fp.ms_per_query}


TUNE_KEYS = ("id", "method", "method_used", "objective", "base_model", "train_time_s", "peak_mem_mb",
             "trainable_params", "total_params", "trainable_pct", "adapter_mb", "curve", "plan", "measured",
             "forgetting", "device", "tokens_per_s", "fallback", "distill",  # distill: teacher, labelling cost
             "rows",  # rows: a learning-curve point's train size
             "padded_tokens", "train_unit_cost", "train_work_s",  # training priced by its work
             "provider", "fine_tuned_model", "trained_tokens", "train_cost_usd", "job_id")  # trained at a provider


def tune_summary(tunes: TuneStore, path: str | None) -> dict[str, Any] | None:
    """What a tuned model cost to train (time, memory, parameters, size) and what it forgot."""
    from taskfit.errors import TaskfitError

    try:
        rec = tunes.get((path or "").removeprefix("tuned:"))
    except TaskfitError:
        return None
    res = {**rec.result, "id": rec.id}
    plan = res.get("plan") or {}
    res["plan"] = {"peak_mem_mb": plan.get("peak_mem_mb"), "time_per_epoch_s": plan.get("time_per_epoch_s")}
    return {k: res.get(k) for k in TUNE_KEYS}


def verdict(table_rows: list[LeaderboardRow], alpha: float = 0.05) -> str:
    """One sentence: the best row, the rows statistically tied with it, and the cheapest of those."""
    if not table_rows:
        return "no rows"
    best = table_rows[0]
    tied = [r for r in table_rows[1:] if r.p_vs_best is not None and r.p_vs_best >= alpha]
    text = f"Best: {best.name} ({best.score:.3f})."
    if len(table_rows) == 1:
        return text + " Only one row: nothing to compare it with."
    untested = [r for r in table_rows[1:] if r.p_vs_best is None]  # no example in common with the best
    if untested:
        text += f" Not compared (no shared examples): {', '.join(r.name for r in untested)}."
    if not tied:
        if len(untested) == len(table_rows) - 1:
            return text
        if len(table_rows) == 2:
            return text + f" The other row ({table_rows[1].name}) is significantly worse (p < 0.05)."
        return text + f" Every other {'compared ' if untested else ''}row is significantly worse (p < 0.05)."
    # money first, then tokens (deterministic; measured time on a shared machine is noisy)
    cheapest = min([best, *tied], key=lambda r: (r.cost_per_1k, r.tokens_in + r.tokens_out, model_seconds_per_1k(r)))
    text += f" Not significantly different (p >= 0.05): {', '.join(r.name for r in tied)}."
    if cheapest is not best:
        why = _cheaper_because(cheapest, best)
        if why:
            text += f" Cheapest of those: {cheapest.name} ({why})."
        else:
            timed = "measured time" if _margin(cheapest, best) == TIME_TOLERANCE else "work x unit cost"
            text += (f" None is cheaper than the best beyond the uncertainty of {timed} "
                     f"(±{_margin(cheapest, best):.0%}; {cheapest.name}: {_duration(model_seconds_per_1k(cheapest))} "
                     f"per 1k queries vs {_duration(model_seconds_per_1k(best))}).")
    return text


def _cheaper_because(a: LeaderboardRow, b: LeaderboardRow) -> str | None:
    """Why ``a`` costs less per query than ``b``: a smaller bill or fewer tokens (exact), or model time shorter
    beyond the timing uncertainty; None when the only difference is inside that uncertainty."""
    if a.cost_per_1k < b.cost_per_1k:
        return f"${a.cost_per_1k:.4f} per 1k queries vs ${b.cost_per_1k:.4f}"
    if round(a.tokens_in) < round(b.tokens_in):
        return f"{a.tokens_in:.0f} tokens in per query vs {b.tokens_in:.0f}"
    margin = _margin(a, b)
    if model_seconds_per_1k(a) * (1 + margin) < model_seconds_per_1k(b) * (1 - margin):
        return f"{_duration(model_seconds_per_1k(a))} per 1k queries vs {_duration(model_seconds_per_1k(b))}"
    return None


def _metric_means(ps: list[PredictionRow]) -> dict[str, float]:
    """Mean of every stored metric (the task's, and strategy-level ones such as recall@k) over the rows."""
    names = sorted({k for p in ps for k in p.metrics})
    return {k: _mean([p.metrics[k] for p in ps if k in p.metrics]) for k in names}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


CAPTION = ("score: mean of the first metric; CI: Wilson (0/1 metrics) or bootstrap; p vs best: McNemar or\n"
           "paired bootstrap, * < 0.05; latency on local models is batch time / batch size")
# a row's time per 1k queries is the wall time measured during the run, kept as evidence; costs use the work
# figure in brackets where a calibration applies, because it does not move with machine load
WORK_CAPTION = ("time per 1k q: measured during the run (wall clock); (work ...): tokens encoded and generated x\n"
                "the model's calibrated unit costs, what costs are priced from; rows without it: measured time")


HEADERS = {"p vs best": "p vs\nbest", "parse fail": "parse\nfail", "tok in/out": "tok\nin/out",
           "$/1k q": "$ per\n1k q", "time/1k q": "time per\n1k q", "score [95% CI]": "score\n[95% CI]"}


def render(table_rows: list[LeaderboardRow], title: str = "Leaderboard", *, wide: bool = False):
    """The leaderboard as Rich tables: the main columns, which fit 120 columns, then a second table of what
    else rows carry (other metrics, judge spend, training cost) when there is any; ``wide``: one table."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    judged = any(r.judge_calls for r in table_rows)
    served = any(r.server for r in table_rows)
    tuned = any(r.tune for r in table_rows)
    shrunk = any(r.precision for r in table_rows)  # a serving footprint was measured (`taskfit shrink`)
    others = any(k != r.metric for r in table_rows for k in r.metrics)
    paid = any(r.cost_per_1k for r in table_rows)
    sizes = {r.n for r in table_rows}
    one_n = len(sizes) == 1 and not wide
    t = Table(title=title + (f", n = {sizes.pop()}" if one_n else ""), title_justify="left", caption=CAPTION,
              caption_justify="left", box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD)
    if shrunk:
        t.caption += "\nserving (precision, MB, peak MB, ms/query): a fresh process, single queries, one thread"
    if any(r.work_time_per_1k_s is not None for r in table_rows):
        t.caption += "\n" + WORK_CAPTION
    for r in table_rows:
        if r.score_via == "generate" and r.score_via_reason:
            t.caption = f"{t.caption}\n{r.model}: labels not scored on the server ({r.score_via_reason})"
    columns = [("strategy", True), ("model", True), ("n", not one_n), ("score [95% CI]", True), ("p vs best", True),
               ("parse fail", True), ("tok in/out", True), ("calls/q", wide), ("$/1k q", wide or paid),
               ("time/1k q", True), ("p50 ms", wide), ("cache hits", wide), ("judge", wide and judged),
               ("other metrics", wide and others), ("training", wide and tuned), ("scored via", wide and served),
               *((name, wide and shrunk) for name in SERVING_COLUMNS), ("run", True)]
    shown = [name for name, show in columns if show]
    cell_rows = []
    for r in table_rows:
        cells = {"strategy": r.strategy, "model": r.model, "n": str(r.n),
                 "score [95% CI]": f"{r.score:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", "p vs best": _p_cell(r.p_vs_best),
                 "parse fail": f"{r.parse_fail_rate:.1%}", "tok in/out": f"{r.tokens_in:.0f}/{r.tokens_out:.0f}",
                 "calls/q": f"{r.calls_per_query:.1f}", "$/1k q": f"${r.cost_per_1k:.4f}",
                 "time/1k q": time_cell(r), "p50 ms": f"{r.latency_p50_ms:.0f}",
                 "cache hits": str(r.cache_hits), "judge": judge_cell(r), "other metrics": _other_metrics(r),
                 "training": training_cell(r.tune), "scored via": scored_via_cell(r), "run": r.run_id,
                 **serving_cells(r)}
        cell_rows.append([cells[name] for name in shown])
    texts = ("strategy", "model", "judge", "other metrics", "training", "scored via", "precision")
    for k, name in enumerate(shown):
        header = name if wide else HEADERS.get(name, name)  # two-line headers keep the numbers' columns narrow
        if name in texts:  # long names wrap inside their cell; numbers are never cut
            t.add_column(header, justify="left", overflow="fold")
        else:
            width = max([len(row[k]) for row in cell_rows] + [len(line) for line in header.splitlines()])
            t.add_column(header, justify="left" if name == "run" else "right", no_wrap=True, min_width=width)
    for row in cell_rows:
        t.add_row(*row)
    if wide or not (judged or tuned or others or served or shrunk):
        return t
    d = Table(title="Details (--wide: one table)", title_justify="left", box=box.SIMPLE_HEAD)
    d.add_column("run", no_wrap=True)
    parts = [("judge calls, tok/q, $/1k q", judged, judge_cell), ("other metrics", others, _other_metrics),
             ("training", tuned, lambda r: training_cell(r.tune)), ("scored via", served, scored_via_cell),
             ("serving", shrunk, serving_cell)]
    for name, show, _ in parts:
        if show:
            d.add_column(name)
    for r in table_rows:
        cells = [cell(r) for _, show, cell in parts if show]
        if any(cells):  # rows with nothing more to say are left out
            d.add_row(r.run_id, *cells)
    return Group(t, d)


SERVING_COLUMNS = ("precision", "size MB", "peak MB", "ms/query")


def time_cell(r: LeaderboardRow) -> str:
    """Measured model time per 1k queries, and the work-based time costs use when there is one."""
    measured = _duration(r.time_per_1k_s)
    return measured if r.work_time_per_1k_s is None else f"{measured} (work {_duration(r.work_time_per_1k_s)})"


def serving_cells(r: LeaderboardRow) -> dict[str, str]:
    """The serving footprint's columns (blank where none was measured)."""
    if not r.precision:
        return dict.fromkeys(SERVING_COLUMNS, "")
    return {"precision": r.precision, "size MB": f"{r.size_mb or 0:,.0f}", "peak MB": f"{r.serving_peak_mb or 0:,.0f}",
            "ms/query": f"{r.ms_per_query or 0:.1f}"}


def serving_cell(r: LeaderboardRow) -> str:
    """The serving footprint in one cell: precision, weights on disk, peak memory, time per query."""
    if not r.precision:
        return ""
    c = serving_cells(r)
    return f"{c['precision']}; {c['size MB']} MB on disk; peak {c['peak MB']} MB; {c['ms/query']} ms/query"


def _p_cell(p: float | None) -> str:
    return "best" if p is None else (f"{p:.3f}" + (" *" if p < 0.05 else ""))


def scored_via_cell(r: LeaderboardRow) -> str:
    """How the row got its answers, and on which server."""
    return r.score_via + (f" on {r.server}" if r.server else "")


def _other_metrics(r: LeaderboardRow) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in r.metrics.items() if k != r.metric)


def judge_cell(r: LeaderboardRow) -> str:
    """The model calls metrics made to score the row (an LLM judge): calls, tokens per query, $ per 1k."""
    if not r.judge_calls:
        return ""
    return (f"{r.judge_calls} calls, {r.judge_tokens_in:.0f}/{r.judge_tokens_out:.0f} tok, "
            f"${r.judge_cost_per_1k:.4f}")


def training_cell(tune: dict[str, Any] | None) -> str:
    """Training time, peak memory, trainable share, adapter size and forgetting, in one cell."""
    if not tune:
        return ""
    if tune.get("provider"):  # trained at a provider: its bill, not local memory
        return (f"{tune['provider']} {_duration(tune.get('train_time_s') or 0)}; "
                f"{tune.get('trained_tokens') or 0:,} tokens; ${tune.get('train_cost_usd') or 0:.4f}")
    parts = [f"{_duration(tune.get('train_time_s') or 0)} {tune.get('device') or ''}".strip(),
             f"peak {tune.get('peak_mem_mb') or 0:.0f} MB",
             f"{tune.get('trainable_params') or 0:,} params ({tune.get('trainable_pct') or 0:.2f}%)",
             f"{tune.get('adapter_mb') or 0:.1f} MB"]
    f = tune.get("forgetting") or {}
    if f.get("score_change") is not None:
        parts.append(f"forgetting {f['score_change']:+.3f}" + (f" ppl {f['ppl_change_pct']:+.0f}%"
                                                             if f.get("ppl_change_pct") is not None else ""))
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
