"""One table for a study: score with 95% CI, paired test against the best row, latency, tokens, calls, cost."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from taskfit.metrics import build_metric
from taskfit.stats import paired_p, score_interval
from taskfit.store import RunRecord
from taskfit.taskfile import MetricSpec, ModelSpec

if TYPE_CHECKING:
    from taskfit.tuning.store import TuneStore
    from taskfit.workspace import Workspace

JSON_KEYS = ("strategy", "model", "n", "score", "ci_low", "ci_high", "p_vs_best", "latency_p50_ms", "tokens_in",
             "tokens_out", "calls", "cache_hits", "cost_per_1k")


def rows(workspace: Workspace, runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Leaderboard rows of ``runs`` (stored in ``workspace``), best score first. ``p_vs_best`` is None for the
    best row itself."""
    preds = {r.id: workspace.runs.predictions(r.id, with_trace=False) for r in runs}
    out = []
    for run in runs:
        ps = preds[run.id]
        metric = MetricSpec(**run.config["task"]["metrics"][0])
        binary = build_metric(metric.name, metric.options, workspace).binary
        scores = [p["score"] for p in ps]
        n = len(ps)
        lo, hi = score_interval(scores, binary) if n else (0.0, 0.0)
        model = ModelSpec(**run.config["model"])
        tin = _mean([p["tokens_in"] for p in ps])
        tout = _mean([p["tokens_out"] for p in ps])
        lat = [p["latency_ms"] for p in ps]
        calls = sum(p["calls"] for p in ps)
        out.append({
            "strategy": run.strategy, "model": run.model, "n": n, "metric": metric.name,
            "score": _mean(scores), "ci_low": lo, "ci_high": hi, "p_vs_best": None,
            "latency_p50_ms": statistics.median(lat) if lat else 0.0,
            "tokens_in": tin, "tokens_out": tout, "calls": calls, "calls_per_query": calls / n if n else 0.0,
            "cache_hits": sum(p["cache_hits"] for p in ps),
            "cost_per_1k": 1000 * (tin * model.price_in_per_1m + tout * model.price_out_per_1m) / 1e6,
            "time_per_1k_s": _mean(lat) if lat else 0.0,  # mean ms per query x 1000 queries / 1000 ms per s
            "parse_fail_rate": _mean([p["parse_failed"] for p in ps]),
            "failed": sum(p["failed"] for p in ps), "mode": run.config.get("mode"), "run_id": run.id,
            "metrics": _metric_means(ps),
            "binary": binary,
            **({"tune": tune_summary(workspace.tunes, model.path)} if model.backend == "tuned"
               or (model.path or "").startswith("tuned:") else {}),
        })
    out.sort(key=lambda r: -r["score"])
    if out:
        best = out[0]
        best_by_id = {p["example_id"]: p["score"] for p in preds[best["run_id"]]}
        for r in out[1:]:
            pairs = [(best_by_id[p["example_id"]], p["score"]) for p in preds[r["run_id"]] if p["example_id"] in best_by_id]
            if pairs:
                a, b = zip(*pairs, strict=True)
                r["p_vs_best"] = paired_p(list(a), list(b), best["binary"] and r["binary"])
    for r in out:
        r.pop("binary")
    return out


TUNE_KEYS = ("id", "method", "method_used", "objective", "base_model", "train_time_s", "peak_mem_mb",
             "trainable_params", "total_params", "trainable_pct", "adapter_mb", "curve", "plan", "measured",
             "forgetting", "device", "tokens_per_s", "fallback", "provider", "fine_tuned_model", "trained_tokens",
             "train_cost_usd", "job_id")


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


def verdict(table_rows: list[dict[str, Any]], alpha: float = 0.05) -> str:
    """One sentence: the best row, the rows statistically tied with it, and the cheapest of those."""
    if not table_rows:
        return "no rows"
    best = table_rows[0]
    tied = [r for r in table_rows[1:] if r["p_vs_best"] is not None and r["p_vs_best"] >= alpha]
    name = lambda r: f"{r['strategy']} x {r['model']}"  # noqa: E731
    text = f"Best: {name(best)} ({best['score']:.3f})."
    if len(table_rows) == 1:
        return text + " Only one row: nothing to compare it with."
    untested = [r for r in table_rows[1:] if r["p_vs_best"] is None]  # no example in common with the best
    if untested:
        text += f" Not compared (no shared examples): {', '.join(name(r) for r in untested)}."
    if not tied:
        if len(untested) == len(table_rows) - 1:
            return text
        if len(table_rows) == 2:
            return text + f" The other row ({name(table_rows[1])}) is significantly worse (p < 0.05)."
        return text + f" Every other {'compared ' if untested else ''}row is significantly worse (p < 0.05)."
    # money first, then tokens (deterministic; measured time on a shared machine is noisy)
    cheapest = min([best, *tied], key=lambda r: (r["cost_per_1k"], r["tokens_in"] + r["tokens_out"], r["time_per_1k_s"]))
    text += f" Not significantly different (p >= 0.05): {', '.join(name(r) for r in tied)}."
    if cheapest is not best:
        if cheapest["cost_per_1k"] < best["cost_per_1k"]:
            why = f"${cheapest['cost_per_1k']:.4f} per 1k queries vs ${best['cost_per_1k']:.4f}"
        elif round(cheapest["tokens_in"]) < round(best["tokens_in"]):
            why = f"{cheapest['tokens_in']:.0f} tokens in per query vs {best['tokens_in']:.0f}"
        else:
            why = f"{_duration(cheapest['time_per_1k_s'])} per 1k queries vs {_duration(best['time_per_1k_s'])}"
        text += f" Cheapest of those: {name(cheapest)} ({why})."
    return text


def _metric_means(ps: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every stored metric (the task's, and strategy-level ones such as recall@k) over the rows."""
    names = sorted({k for p in ps for k in p["metrics"]})
    return {k: _mean([p["metrics"][k] for p in ps if k in p["metrics"]]) for k in names}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def render(table_rows: list[dict[str, Any]], title: str = "Leaderboard"):
    """A Rich table of the rows."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, just in [("strategy", "left"), ("model", "left"), ("n", "right"), ("score [95% CI]", "right"),
                      ("p vs best", "right"), ("parse fail", "right"), ("p50 ms", "right"), ("tok in/out", "right"),
                      ("calls/q", "right"), ("cache hits", "right"), ("$/1k q", "right"), ("time/1k q", "right"),
                      ("other metrics", "left"), ("run", "left")]:
        t.add_column(col, justify=just)
    if any(r.get("tune") for r in table_rows):
        t.add_column("training", justify="left")
    for r in table_rows:
        p = r["p_vs_best"]
        t.add_row(
            r["strategy"], r["model"], str(r["n"]),
            f"{r['score']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            "best" if p is None else (f"{p:.3f}" + (" *" if p < 0.05 else "")),
            f"{r['parse_fail_rate']:.1%}", f"{r['latency_p50_ms']:.0f}",
            f"{r['tokens_in']:.0f}/{r['tokens_out']:.0f}", f"{r['calls_per_query']:.1f}", str(r["cache_hits"]),
            f"${r['cost_per_1k']:.4f}", _duration(r["time_per_1k_s"]),
            " ".join(f"{k}={v:.3f}" for k, v in r["metrics"].items() if k != r["metric"]), r["run_id"],
            *([training_cell(r.get("tune"))] if any(x.get("tune") for x in table_rows) else []),
        )
    t.caption = ("score: mean of the first metric; CI: Wilson (0/1 metrics) or bootstrap; p vs best: McNemar or "
                 "paired bootstrap, * < 0.05; latency on local models is batch time / batch size")
    return t


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
