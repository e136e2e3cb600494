"""The decision report: one self-contained HTML file that answers "prompting, retrieval or fine-tuning?".

``collect`` gathers leaderboard rows for a task's latest study (or given runs), per-label confusion matrices
or error breakdowns from the stored predictions, and paired tests between every two rows;
``taskfit.recommend`` turns the rows into a plain-language recommendation (a pure function); ``render_html`` draws the plots as
inline SVG and fills ``templates/report.html.j2``, so the file opens offline with no external fetch.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from html import escape
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from taskfit.costs import count
from taskfit.costs import money as money_text
from taskfit.curve import CURVE_STUDY, LearningCurve, curves, latest_curve_runs
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows as leaderboard_rows
from taskfit.recommend import (
    RETRIEVAL_STRATEGIES,
    TECHNIQUE_NAMES,
    Recommendation,
    on_premise,
    recommend,
    row_name,
    score_text,
    technique,
)
from taskfit.stats import bootstrap_interval, paired_p
from taskfit.store import RunRecord, Store
from taskfit.types import LeaderboardRow, ReportRow

if TYPE_CHECKING:
    from taskfit.costs import Volume
    from taskfit.taskfile import TaskConfig
    from taskfit.workspace import Workspace

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass
class Breakdown:
    """Per-run error analysis: a confusion matrix for label tasks, else counts of outcome kinds."""

    run_id: str
    name: str
    labels: list[str] = field(default_factory=list)  # matrix rows = gold, columns = labels + '(none)'
    matrix: list[list[int]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class ReportData:
    title: str
    metric: str
    rows: list[ReportRow]
    pairwise: dict[tuple[str, str], dict[str, Any]]
    breakdowns: list[Breakdown]
    recommendation: Recommendation
    curves: list[LearningCurve] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    study: str = ""
    split: str = ""


# -- choosing runs ---------------------------------------------------------------------------------------


def latest_study_runs(store: Store, task_name: str) -> list[RunRecord]:
    """The finished runs of a task's latest study, one per strategy x model.

    A study is one ``taskfit run``/``eval`` invocation. An arm resumed in that invocation keeps the id of the
    study it started in, so runs of the task finished after the latest study began count as part of it.
    """
    runs = [r for r in store.list(limit=1_000_000)
            if r.task_name == task_name and not r.study.startswith(CURVE_STUDY)]
    if not runs:
        raise TaskfitError(f"no runs of task {task_name!r}; see `taskfit runs`")
    study = runs[0].study  # newest first
    started = min(r.created for r in runs if r.study == study)
    chosen: dict[tuple[str, str], RunRecord] = {}
    for r in runs:
        if r.status != "done":
            continue
        if r.study == study or (r.finished or 0) >= started:
            chosen.setdefault((r.strategy, r.model), r)
    if not chosen:
        raise TaskfitError(f"the latest study of task {task_name!r} has no finished run yet")
    return list(chosen.values())


def resolve_targets(store: Store, targets: Sequence[str]) -> list[RunRecord]:
    """Runs named by task files, task names or run ids; no targets: the latest study of the newest task."""
    if not targets:
        recent = store.list(limit=1)
        if not recent:
            raise TaskfitError("no runs yet: run `taskfit run TASK` first")
        return latest_study_runs(store, recent[0].task_name)
    out: dict[str, RunRecord] = {}
    for target in targets:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            from taskfit.taskfile import load_task

            runs = latest_study_runs(store, load_task(path).config.name)
        elif any(r.task_name == target for r in store.list(limit=1_000_000)):
            runs = latest_study_runs(store, target)
        elif (run := store.get(target)) is not None:
            runs = [run]
        else:
            raise TaskfitError(
                f"{target!r} is neither a task file, a task name nor a run id (see `taskfit runs`)"
            )
        out.update({r.id: r for r in runs})
    return list(out.values())


# -- collecting ------------------------------------------------------------------------------------------


def _run_facts(run: RunRecord) -> dict[str, Any]:
    """What the leaderboard row lacks for a decision: the technique, where the model runs, its size."""
    model = run.config.get("model", {})
    backend = run.config.get("backend", {})
    strategy = run.config.get("strategy", {}).get("name", run.strategy)
    host = urlparse(model.get("base_url") or "").hostname
    local = model.get("backend") != "openai" or host in LOOPBACK_HOSTS
    facts: dict[str, Any] = {
        "on_premise": local,
        "strategy_name": strategy,
        "split": run.split,
        "study": run.study,
        "task_name": run.task_name,
    }
    if backend.get("parameters"):
        facts["model_params"] = backend["parameters"]
        width = 2 if "16" in str(backend.get("dtype", "")) else 4  # bytes per weight: (b)float16 or float32
        facts["model_mb"] = backend["parameters"] * width / 2**20
    if strategy in RETRIEVAL_STRATEGIES:
        facts["technique"] = "retrieval"
    return facts


def pairwise_tests(
    store: Store, table: Sequence[LeaderboardRow], binary: bool
) -> dict[tuple[str, str], dict[str, Any]]:
    """For every two rows (a, b): the paired p-value and the mean difference a - b with a bootstrap 95% CI."""
    scores = {
        r.run_id: {p.example_id: p.score for p in store.predictions(r.run_id, with_trace=False)}
        for r in table
    }
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for a, b in combinations([r.run_id for r in table], 2):
        shared = [k for k in scores[a] if k in scores[b]]
        if not shared:
            continue
        xa = [scores[a][k] for k in shared]
        xb = [scores[b][k] for k in shared]
        d = [x - y for x, y in zip(xa, xb, strict=True)]
        lo, hi = bootstrap_interval(d)
        entry = {"p": paired_p(xa, xb, binary), "diff": sum(d) / len(d), "ci": (lo, hi), "n": len(d)}
        out[(a, b)] = entry
        out[(b, a)] = {**entry, "diff": -entry["diff"], "ci": (-hi, -lo)}
    return out


def breakdown(store: Store, run: RunRecord) -> Breakdown:
    """A confusion matrix (label tasks) or outcome counts (generative tasks) from a run's predictions."""
    preds = store.predictions(run.id, with_trace=False)
    name = f"{run.strategy} x {run.model}"
    labels = run.config.get("task", {}).get("labels")
    if labels:
        cols = [*labels, "(none)"]
        index = {lab: i for i, lab in enumerate(cols)}
        matrix = [[0] * len(cols) for _ in labels]
        gold = {lab: i for i, lab in enumerate(labels)}
        for p in preds:
            if p.target in gold:
                matrix[gold[p.target]][index.get(p.answer, len(cols) - 1)] += 1
        return Breakdown(run.id, name, labels=list(labels), matrix=matrix)
    counts: Counter[str] = Counter()
    for p in preds:
        if p.failed:
            counts["call failed"] += 1
        elif p.parse_failed:
            counts["parse failed"] += 1
        elif p.score >= 1.0:
            counts["correct"] += 1
        elif p.score > 0:
            counts["partly right"] += 1
        else:
            counts["wrong"] += 1
    order = ["correct", "partly right", "wrong", "parse failed", "call failed"]
    return Breakdown(run.id, name, outcomes={k: counts[k] for k in order if counts[k]})


def collect(
    workspace: Workspace,
    runs: Sequence[RunRecord],
    *,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
    prices: TaskConfig | None = None,
) -> ReportData:
    """Everything the report shows, computed from the runs and predictions stored in ``workspace``.

    Args:
        volume, latency_p50_ms: what the recommendation prices at and the latency it must meet.
        prices: a task file's config whose ``costs`` and models' ``price_per_hour`` replace the prices stored
            with the runs (prices change no prediction, so a report can reprice stored runs).
    """
    store = workspace.runs
    if not runs:
        raise TaskfitError("no runs to report on")
    metric_names = {r.config["task"]["metrics"][0]["name"] for r in runs}
    if len({r.task_name for r in runs}) > 1 or len(metric_names) > 1:
        raise TaskfitError(
            "runs of different tasks or metrics cannot share one report: "
            f"{sorted({r.task_name for r in runs})}"
        )
    by_id = {r.id: r for r in runs}
    table = [report_row(row, _run_facts(by_id[row.run_id])) for row in leaderboard_rows(workspace, list(runs))]
    table = [replace(row, **_prices(by_id[row.run_id], row, prices)) for row in table]
    binary = all(_binary(r, workspace) for r in runs)
    pairs = pairwise_tests(store, table, binary)
    first = runs[0]
    return ReportData(
        curves=_learning_curves(workspace, table, pairs, first.task_name, binary),
        title=first.task_name,
        metric=table[0].metric if table else "",
        rows=table,
        pairwise=pairs,
        breakdowns=[breakdown(store, by_id[r.run_id]) for r in table],
        recommendation=recommend(table, pairs, volume=volume, latency_p50_ms=latency_p50_ms),
        study=", ".join(sorted({r.study for r in runs})),
        split=", ".join(sorted({r.split for r in runs})),
    )


def report_row(row: LeaderboardRow, facts: dict[str, Any]) -> ReportRow:
    """A new row: the leaderboard row plus the run's facts, with its technique settled."""
    out = ReportRow(**{f.name: getattr(row, f.name) for f in fields(LeaderboardRow)}, **facts)
    return replace(out, technique=technique(out))


def _learning_curves(
    workspace: Workspace, table: list[ReportRow], pairs: dict, task_name: str, binary: bool
) -> list[LearningCurve]:
    """Curves among the report's own rows, else the task's latest `taskfit curve` against its best prompt row."""
    found = curves(table, pairs)
    reference = next((r for r in table if r.technique == "prompting"), None)
    if found or reference is None:
        return found
    extra = latest_curve_runs(workspace.runs.list(limit=1_000_000), task_name)
    if not extra:
        return []
    rows = [report_row(row, {}) for row in leaderboard_rows(workspace, extra)]
    return curves(rows, pairwise_tests(workspace.runs, [*rows, reference], binary), reference=reference)


def _prices(run: RunRecord, row: ReportRow, override: TaskConfig | None) -> dict[str, float | None]:
    """The row's serving and training device prices ($ per hour): the model entry's, else the task's."""
    if override is not None:
        costs = override.costs.model_dump()
        entry = next((m for m in override.models if m.label() == row.model), None)
        model_price = entry.price_per_hour if entry is not None else None
    else:
        costs = run.config["task"].get("costs") or {}
        model_price = run.config["model"].get("price_per_hour")
    serve = costs.get("price_per_hour") if model_price is None and on_premise(row) else model_price
    train = costs.get("train_price_per_hour")
    return {
        "price_per_hour": serve,
        "train_price_per_hour": (costs.get("price_per_hour") if train is None else train) if row.tune else None,
    }


def _binary(run: RunRecord, workspace: Workspace) -> bool:
    from taskfit.metrics import build_metric

    if run.config.get("binary") is not None:
        return bool(run.config["binary"])
    m = run.config["task"]["metrics"][0]
    return build_metric(m["name"], m.get("options", {}), workspace).binary


# -- the decision ----------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), in input order."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


# -- drawing ---------------------------------------------------------------------------------------------

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 320, 64, 16, 16, 48
COLORS = {"prompting": "#2563eb", "retrieval": "#059669", "fine_tune": "#d97706"}


def _fmt(v: float) -> str:
    """An axis tick or a plotted value: 0.0001 stays 0.0001 on a log-scale cost axis."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _axis(lo: float, hi: float, log: bool, size: float, start: float, flip: bool = False):
    """A function mapping data to pixels, and the tick values."""
    if log:
        llo, lhi = math.log10(lo), math.log10(hi)
        if lhi - llo < 1e-9:
            llo, lhi = llo - 0.5, lhi + 0.5
        ticks = [10**e for e in range(math.floor(llo), math.ceil(lhi) + 1)]

        def to_px(v: float) -> float:
            f = (math.log10(max(v, 1e-12)) - llo) / (lhi - llo)
            return start + (size - size * f if flip else size * f)

        return to_px, [t for t in ticks if lo / 1.001 <= t <= hi * 1.001] or [lo, hi]
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 if lo else 0.0, hi + 0.5
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    ticks = [math.ceil(lo / step) * step + i * step for i in range(12)]

    def to_px(v: float) -> float:
        f = (v - lo) / (hi - lo)
        return start + (size - size * f if flip else size * f)

    return to_px, [t for t in ticks if t <= hi + 1e-12]


def scatter_svg(table: Sequence[ReportRow], x_key: str, x_label: str, y_label: str) -> str:
    """Score (with CI bars) against a cost, a dot per row; the Pareto front (lower x, higher score) joined."""
    xs = [float(getattr(r, x_key) or 0.0) for r in table]
    ys = [r.score for r in table]
    positive = [x for x in xs if x > 0]
    log = len(positive) == len(xs) and len(xs) > 1 and max(xs) / min(xs) > 20
    x_lo, x_hi = (min(xs) / 1.5, max(xs) * 1.5) if log else (0.0, max(xs) * 1.1 or 1.0)
    y_lo = min(min(r.ci_low for r in table), min(ys))
    y_hi = max(max(r.ci_high for r in table), max(ys))
    y_lo, y_hi = max(0.0, y_lo - 0.05), min(1.0, y_hi + 0.05) if y_hi <= 1 else y_hi * 1.05
    fx, xticks = _axis(x_lo, x_hi, log, W - PAD_L - PAD_R, PAD_L)
    fy, yticks = _axis(y_lo, y_hi, False, H - PAD_T - PAD_B, PAD_T, flip=True)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="plot" role="img">']
    out += _frame(fx, fy, xticks, yticks, x_label + (" (log scale)" if log else ""), y_label)
    front = pareto_front(list(zip(xs, ys, strict=True)))
    pts = sorted((xs[i], ys[i]) for i in front)
    if len(pts) > 1:
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="#dc2626" stroke-width="1.5" '
            f'stroke-dasharray="5 3"/>'
        )
    label_y = _spread_labels([(fx(x), fy(y)) for x, y in zip(xs, ys, strict=True)])
    for i, r in enumerate(table):
        cx, color = fx(xs[i]), COLORS[technique(r)]
        out.append(
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{fy(r.ci_low):.1f}" y2="{fy(r.ci_high):.1f}" '
            f'stroke="{color}" stroke-opacity="0.5" stroke-width="2"/>'
        )
        ring = ' stroke="#dc2626" stroke-width="2.5"' if i in front else ""
        out.append(
            f'<circle cx="{cx:.1f}" cy="{fy(ys[i]):.1f}" r="5" fill="{color}"{ring}>'
            f"<title>{escape(row_name(r))}: {score_text(r)}, {x_label} {_fmt(xs[i])}</title></circle>"
        )
        right = cx > W * 0.7  # labels of dots near the right edge go on their left
        anchor = "end" if right else "start"
        out.append(
            f'<text x="{cx - 8 if right else cx + 8:.1f}" y="{label_y[i] + 4:.1f}" class="lbl" '
            f'text-anchor="{anchor}">{escape(r.strategy)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _spread_labels(points: list[tuple[float, float]], gap: float = 13.0) -> list[float]:
    """Label heights for dots, moved down where two labels would overlap (dots closer than 90 px across)."""
    ys = [y for _, y in points]
    placed: list[int] = []
    for i in sorted(range(len(points)), key=lambda k: points[k][1]):
        for j in placed:
            if abs(points[j][0] - points[i][0]) < 90 and abs(ys[j] - ys[i]) < gap:
                ys[i] = ys[j] + gap
        placed.append(i)
    return ys


def _frame(fx, fy, xticks, yticks, x_label: str, y_label: str, y_fmt=None) -> list[str]:
    out = [
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" '
        f'fill="none" stroke="#999"/>'
    ]
    for t in xticks:
        out.append(
            f'<line x1="{fx(t):.1f}" x2="{fx(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#eee"/>'
            f'<text x="{fx(t):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" class="tick">{_fmt(t)}</text>'
        )
    for t in yticks:
        out.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{fy(t):.1f}" y2="{fy(t):.1f}" stroke="#eee"/>'
            f'<text x="{PAD_L - 6}" y="{fy(t) + 4:.1f}" text-anchor="end" class="tick">{(y_fmt or _fmt)(t)}</text>'
        )
    out.append(
        f'<text x="{PAD_L + (W - PAD_L - PAD_R) / 2}" y="{H - 8}" text-anchor="middle" class="axis">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(14 {PAD_T + (H - PAD_T - PAD_B) / 2}) rotate(-90)" '
        f'text-anchor="middle" class="axis">{escape(y_label)}</text>'
    )
    return out


def ci_bars_svg(table: Sequence[ReportRow], metric: str) -> str:
    """One horizontal bar per row: the 95% CI, with the mean marked; the best row's CI shaded across."""
    row_h, left, width = 26, 280, 1000
    height = PAD_T + row_h * len(table) + 40
    lo = min(r.ci_low for r in table)
    hi = max(r.ci_high for r in table)
    lo, hi = max(0.0, lo - 0.05), hi + 0.05 if hi > 1 else min(1.0, hi + 0.05)
    fx, ticks = _axis(lo, hi, False, width - left - PAD_R, left)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="plot" role="img">']
    best = max(table, key=lambda r: r.score)
    band = fx(best.ci_high) - fx(best.ci_low)
    out.append(
        f'<rect x="{fx(best.ci_low):.1f}" y="{PAD_T}" width="{band:.1f}" '
        f'height="{row_h * len(table)}" fill="#fde68a" fill-opacity="0.35"/>'
    )
    for t in ticks:
        out.append(
            f'<line x1="{fx(t):.1f}" x2="{fx(t):.1f}" y1="{PAD_T}" y2="{PAD_T + row_h * len(table)}" '
            f'stroke="#eee"/><text x="{fx(t):.1f}" y="{PAD_T + row_h * len(table) + 16}" '
            f'text-anchor="middle" class="tick">{_fmt(t)}</text>'
        )
    for i, r in enumerate(table):
        y = PAD_T + row_h * i + row_h / 2
        color = COLORS[technique(r)]
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" class="lbl">{escape(row_name(r))}</text>'
        )
        out.append(
            f'<line x1="{fx(r.ci_low):.1f}" x2="{fx(r.ci_high):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="6" stroke-linecap="round" stroke-opacity="0.6"/>'
        )
        out.append(
            f'<circle cx="{fx(r.score):.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{escape(row_name(r))}: '
            f"{score_text(r)}</title></circle>"
        )
    out.append(
        f'<text x="{left + (width - left) / 2}" y="{height - 6}" text-anchor="middle" class="axis">'
        f"{escape(metric)} with 95% CI (shaded: the best row's CI)</text></svg>"
    )
    return "\n".join(out)


def line_svg(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str) -> str:
    """Lines through (x, y) points, one per named series (training curves)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    fx, xt = _axis(min(xs), max(xs), False, W - PAD_L - PAD_R, PAD_L)
    fy, yt = _axis(min(ys), max(ys), False, H - PAD_T - PAD_B, PAD_T, flip=True)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="plot small" role="img">']
    out += _frame(fx, fy, xt, yt, x_label, y_label)
    for (name, s), color in zip(series.items(), ("#d97706", "#2563eb", "#059669", "#7c3aed"), strict=False):
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in sorted(s))
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"><title>{escape(name)}'
            f"</title></polyline>"
        )
    out.append("</svg>")
    return "\n".join(out)


def volume_svg(rec: Recommendation, most: int = 5) -> str:
    """Total cost (one-time + per query x volume) against the query volume, log-log, for the leading rows:
    the recommended one, the best prompt and fine-tuned rows, then the best scores; the break-even marked."""
    leading: list[tuple[ReportRow, Any]] = []
    wanted = [rec.row, *(rec.break_even_rows or ())] + [r for r, _ in rec.costs]
    by_id = {id(r): c for r, c in rec.costs}
    for r in wanted:
        if r is not None and id(r) in by_id and all(r is not x for x, _ in leading) and len(leading) < most:
            leading.append((r, by_id[id(r)]))
    if not leading:
        return ""
    anchors = [v for v in ((rec.volume.queries if rec.volume else None), rec.break_even) if v]
    x_hi = 10 ** math.ceil(math.log10(max([*anchors, 1e4]) * 10))
    x_lo = max(1.0, x_hi / 1e6)
    xs = [x_lo * (x_hi / x_lo) ** (i / 60) for i in range(61)]
    series = [(r, [(x, max(c.total(x), 1e-12)) for x in xs]) for r, c in leading]
    ys = [y for _, pts in series for _, y in pts]
    fx, xticks = _axis(x_lo, x_hi, True, W - PAD_L - PAD_R, PAD_L)
    fy, yticks = _axis(min(ys), max(ys), True, H - PAD_T - PAD_B, PAD_T, flip=True)
    yticks = yticks[:: math.ceil(len(yticks) / 8)]  # at most 8 labelled decades
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="plot" role="img">']
    out += _frame(fx, fy, xticks, yticks, "queries (log scale)", f"total cost, {rec.unit} (log scale)",
                  y_fmt=lambda v: money_text(v, rec.unit).removesuffix(" machine-h"))
    palette = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777")
    label_y = _spread_labels([(W - PAD_R, fy(pts[-1][1]) + 14) for _, pts in series])
    for i, ((r, pts), color) in enumerate(zip(series, palette, strict=False)):
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in pts)
        width = 3 if r is rec.row else 1.5
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}">'
                   f"<title>{escape(row_name(r))}</title></polyline>")
        out.append(f'<text x="{W - PAD_R - 6}" y="{min(label_y[i], H - PAD_B - 4):.1f}" class="lbl" '
                   f'text-anchor="end" fill="{color}">{escape(row_name(r))}</text>')
    if rec.volume is not None:
        x = fx(rec.volume.queries)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#111827" '
                   f'stroke-dasharray="4 3"><title>{escape(rec.volume.text())}</title></line>')
    if rec.break_even and rec.break_even_rows is not None:
        cost = next(c for r, c in rec.costs if r is rec.break_even_rows[0]).total(rec.break_even)
        out.append(f'<circle cx="{fx(rec.break_even):.1f}" cy="{fy(max(cost, 1e-12)):.1f}" r="5" fill="none" '
                   f'stroke="#dc2626" stroke-width="2"><title>break-even: {count(rec.break_even)} queries'
                   f"</title></circle>")
    out.append("</svg>")
    return "\n".join(out)


def curve_svg(curve: LearningCurve) -> str:
    """A learning curve: score with its 95% CI against labelled rows (log scale), the best prompt row's score
    and CI as a band; hollow dots are significantly worse than it."""
    ref = curve.reference
    sizes = [p.size for p in curve.points]
    lows = [p.row.ci_low for p in curve.points] + ([ref.ci_low] if ref else [])
    highs = [p.row.ci_high for p in curve.points] + ([ref.ci_high] if ref else [])
    fx, xticks = _axis(min(sizes) / 1.3, max(sizes) * 1.3, True, W - PAD_L - PAD_R, PAD_L)
    y_lo, y_hi = max(0.0, min(lows) - 0.03), max(highs) + 0.03
    fy, yticks = _axis(y_lo, min(1.0, y_hi) if y_hi <= 1.03 else y_hi, False, H - PAD_T - PAD_B, PAD_T, flip=True)
    xticks = sorted({*xticks, *sizes}) if len(sizes) <= 8 else xticks
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="plot" role="img">']
    out += _frame(fx, fy, xticks, yticks, "labelled training rows (log scale)", curve.points[0].row.metric
                  if curve.points[0].row.metric else "score")
    if ref is not None:
        top, bottom = fy(ref.ci_high), fy(ref.ci_low)
        out.append(f'<rect x="{PAD_L}" y="{top:.1f}" width="{W - PAD_L - PAD_R}" height="{bottom - top:.1f}" '
                   f'fill="{COLORS["prompting"]}" fill-opacity="0.12"/>')
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{fy(ref.score):.1f}" y2="{fy(ref.score):.1f}" '
                   f'stroke="{COLORS["prompting"]}" stroke-dasharray="5 3"><title>{escape(row_name(ref))}: '
                   f"{score_text(ref)}</title></line>")
        out.append(f'<text x="{PAD_L + 6}" y="{fy(ref.score) - 5:.1f}" class="lbl" fill="{COLORS["prompting"]}">'
                   f"best prompt: {escape(row_name(ref))}</text>")
    color = COLORS["fine_tune"]
    path = " ".join(f"{fx(p.size):.1f},{fy(p.row.score):.1f}" for p in curve.points)
    out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for p in curve.points:
        x = fx(p.size)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{fy(p.row.ci_low):.1f}" y2="{fy(p.row.ci_high):.1f}" '
                   f'stroke="{color}" stroke-opacity="0.5" stroke-width="2"/>')
        fill = "#fff" if p.worse else color
        out.append(f'<circle cx="{x:.1f}" cy="{fy(p.row.score):.1f}" r="5" fill="{fill}" stroke="{color}" '
                   f'stroke-width="2"><title>{p.size:,} rows: {score_text(p.row)}</title></circle>')
    if curve.matches_from is not None:
        x = fx(curve.matches_from)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#dc2626" '
                   f'stroke-dasharray="4 3"><title>matches the best prompt from {curve.matches_from:,} rows'
                   f"</title></line>")
    out.append("</svg>")
    return "\n".join(out)


def _readable(v: Any) -> Any:
    """Numbers as people read them: thousands separators, at most 3 decimals."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return v
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"


def tune_view(row: LeaderboardRow) -> dict[str, Any]:
    """What the report shows for a fine-tuned row; keys absent or None in ``row.tune`` are left out."""
    tune = row.tune or {}
    curve = [c for c in tune.get("curve") or [] if c.get("step") is not None]
    loss = [(float(c["step"]), float(c["loss"])) for c in curve if c.get("loss") is not None]
    evals = [(float(c["step"]), float(c["eval_score"])) for c in curve if c.get("eval_score") is not None]
    plan, measured = tune.get("plan") or {}, tune.get("measured") or {}
    resources = [
        (label, plan.get(key), measured.get(key))
        for key, label in (("peak_mem_mb", "peak memory (MB)"), ("time_per_epoch_s", "time per epoch (s)"))
        if plan.get(key) is not None or measured.get(key) is not None
    ]
    facts = [
        (label, tune.get(key))
        for key, label in (
            ("method", "method"),
            ("objective", "objective"),
            ("base_model", "base model"),
            ("device", "device"),
            ("train_time_s", "training time (s)"),
            ("peak_mem_mb", "peak memory (MB)"),
            ("trainable_params", "trainable parameters"),
            ("trainable_pct", "trainable %"),
            ("adapter_mb", "adapter size (MB)"),
        )
        if tune.get(key) is not None
    ]
    forgetting = [
        (label, (tune.get("forgetting") or {}).get(key))
        for key, label in (
            ("general_task", "general task"),
            ("ppl_before", "perplexity before"),
            ("ppl_after", "perplexity after"),
            ("score_before", "score before"),
            ("score_after", "score after"),
        )
        if (tune.get("forgetting") or {}).get(key) is not None
    ]
    return {
        "name": row_name(row),
        "facts": [(label, _readable(v)) for label, v in facts],
        "resources": [(label, _readable(p), _readable(m)) for label, p, m in resources],
        "forgetting": [(label, _readable(v)) for label, v in forgetting],
        "loss_svg": line_svg({"train loss": loss}, "step", "train loss") if loss else "",
        "eval_svg": line_svg({"eval score": evals}, "step", "eval score") if evals else "",
    }


# -- the file --------------------------------------------------------------------------------------------


def render_html(data: ReportData) -> str:
    """The report as one HTML document: inline CSS and SVG, no scripts or external resources."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["j2", "html"]),
    )
    table = data.rows
    money = any(r.cost_per_1k for r in table)
    plots = {}
    if table:
        plots["ci"] = Markup(ci_bars_svg(table, data.metric))
        plots["cost"] = Markup(
            scatter_svg(table, "cost_per_1k", "$ per 1,000 queries", data.metric)
            if money
            else scatter_svg(table, "time_per_1k_s", "model time per 1,000 queries (s)", data.metric)
        )
        plots["latency"] = Markup(scatter_svg(table, "latency_p50_ms", "p50 latency (ms)", data.metric))
        plots["volume"] = Markup(volume_svg(data.recommendation))
    learning = [{"svg": Markup(curve_svg(c)), "text": c.statement(), "recipe": c.recipe} for c in data.curves]
    tuned = [tune_view(r) for r in table if r.tune]
    for t in tuned:
        t["loss_svg"], t["eval_svg"] = Markup(t["loss_svg"]), Markup(t["eval_svg"])
    return env.get_template("report.html.j2").render(
        data=data,
        rows=table,
        plots=plots,
        money=money,
        tuned=tuned,
        technique=technique,
        on_premise=on_premise,
        names=TECHNIQUE_NAMES,
        colors=COLORS,
        front_cost=_front_names(table, "cost_per_1k" if money else "time_per_1k_s"),
        learning=learning,
        price=money_text,
        count=count,
        created=time.strftime("%Y-%m-%d %H:%M", time.localtime(data.created)),
    )


def _front_names(table: Sequence[ReportRow], key: str) -> set[str]:
    idx = pareto_front([(float(getattr(r, key) or 0.0), r.score) for r in table])
    return {table[i].run_id for i in idx}


def default_path(data: ReportData, folder: Path) -> Path:
    """<folder>/<task>-<study>.html."""
    study = data.study.split(", ")[0] if data.study else time.strftime("%Y%m%d-%H%M%S")
    # task names are checked at load, but stored runs may predate that check: never leave the folder
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{data.title}-{study}").lstrip(".") or "report"
    return folder / f"{name}.html"


def report_data(
    workspace: Workspace,
    targets: Sequence[str] = (),
    *,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
) -> ReportData:
    """The report's content for ``targets`` (task files, task names or run ids; none: the latest study).
    A task file among the targets also supplies the current prices."""
    prices = None
    for target in targets:
        if Path(target).suffix in (".yaml", ".yml") and Path(target).is_file():
            from taskfit.taskfile import load_task

            prices = load_task(target).config
    runs = resolve_targets(workspace.runs, targets)
    return collect(workspace, runs, volume=volume, latency_p50_ms=latency_p50_ms, prices=prices)


def write_report(
    targets: Sequence[str] = (),
    out: str | Path | None = None,
    *,
    workspace: Workspace,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
) -> Path:
    """Write the report for ``targets`` (task files, task names or run ids; none: the latest study) and
    return its path (default ``<workspace>/reports/<task>-<study>.html``)."""
    data = report_data(workspace, targets, volume=volume, latency_p50_ms=latency_p50_ms)
    return save(data, out, workspace=workspace)


def save(data: ReportData, out: str | Path | None = None, *, workspace: Workspace) -> Path:
    """Write ``data`` as HTML to ``out`` (default: ``<workspace>/reports/<task>-<study>.html``); its path."""
    path = Path(out) if out else default_path(data, workspace.reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path
