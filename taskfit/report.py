"""The decision report: one self-contained HTML file that answers "prompting, retrieval or fine-tuning?".

``collect`` gathers leaderboard rows for a task's latest study (or given runs), per-label confusion matrices
or error breakdowns from the stored predictions, and paired tests between every two rows; ``recommend``
turns the rows into a plain-language recommendation (a pure function); ``render_html`` draws the plots as
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

from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows as leaderboard_rows
from taskfit.stats import bootstrap_interval, paired_p
from taskfit.store import RunRecord, Store
from taskfit.types import LeaderboardRow, ReportRow

if TYPE_CHECKING:
    from taskfit.workspace import Workspace

ALPHA = 0.05
# how much a technique asks of its user beyond the prompt: retrieval needs an index, fine-tuning a training
# run and an adapter to keep; among rows the data cannot separate, the least demanding one is recommended
TECHNIQUE_RANK = {"prompting": 0, "retrieval": 1, "fine_tune": 2}
TECHNIQUE_NAMES = {"prompting": "prompt engineering", "retrieval": "retrieval", "fine_tune": "fine-tuning"}
RETRIEVAL_STRATEGIES = {"rag"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass
class Recommendation:
    choice: str  # prompting | retrieval | fine_tune | tie | none
    text: str
    row: ReportRow | None = None


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
    created: float = field(default_factory=time.time)
    study: str = ""
    split: str = ""


# -- choosing runs ---------------------------------------------------------------------------------------


def latest_study_runs(store: Store, task_name: str) -> list[RunRecord]:
    """The finished runs of a task's latest study, one per strategy x model.

    A study is one ``taskfit run``/``eval`` invocation. An arm resumed in that invocation keeps the id of the
    study it started in, so runs of the task finished after the latest study began count as part of it.
    """
    runs = [r for r in store.runs(limit=1_000_000) if r.task_name == task_name]
    if not runs:
        raise TaskfitError(f"no runs of task {task_name!r}; see `taskfit runs`")
    study = runs[0].study  # newest first
    started = min(r.created for r in runs if r.study == study)
    chosen: dict[tuple[str, str], RunRecord] = {}
    for r in runs:
        if r.status != "complete":
            continue
        if r.study == study or (r.finished or 0) >= started:
            chosen.setdefault((r.strategy, r.model), r)
    if not chosen:
        raise TaskfitError(f"the latest study of task {task_name!r} has no finished run yet")
    return list(chosen.values())


def resolve_targets(store: Store, targets: Sequence[str]) -> list[RunRecord]:
    """Runs named by task files, task names or run ids; no targets: the latest study of the newest task."""
    if not targets:
        recent = store.runs(limit=1)
        if not recent:
            raise TaskfitError("no runs yet: run `taskfit run TASK` first")
        return latest_study_runs(store, recent[0].task_name)
    out: dict[str, RunRecord] = {}
    for target in targets:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            from taskfit.taskfile import load_task

            runs = latest_study_runs(store, load_task(path).config.name)
        elif any(r.task_name == target for r in store.runs(limit=1_000_000)):
            runs = latest_study_runs(store, target)
        elif (run := store.run(target)) is not None:
            runs = [run]
        else:
            raise TaskfitError(
                f"{target!r} is neither a task file, a task name nor a run id (see `taskfit runs`)"
            )
        out.update({r.id: r for r in runs})
    return list(out.values())


# -- collecting ------------------------------------------------------------------------------------------


def technique(row: ReportRow) -> str:
    """prompting, retrieval or fine_tune, from the row's stored technique or its tune info and strategy."""
    if row.technique:
        return row.technique
    if row.tune or row.model.startswith("tuned:"):
        return "fine_tune"
    if row.strategy.split("_")[0] in RETRIEVAL_STRATEGIES:
        return "retrieval"
    return "prompting"


def on_premise(row: ReportRow) -> bool:
    """Whether the row's model runs on the user's machines (a local backend or a loopback server)."""
    if row.on_premise is not None:
        return row.on_premise
    return not row.cost_per_1k


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


def collect(workspace: Workspace, runs: Sequence[RunRecord]) -> ReportData:
    """Everything the report shows, computed from the runs and predictions stored in ``workspace``."""
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
    binary = all(_binary(r, workspace) for r in runs)
    pairs = pairwise_tests(store, table, binary)
    first = runs[0]
    return ReportData(
        title=first.task_name,
        metric=table[0].metric if table else "",
        rows=table,
        pairwise=pairs,
        breakdowns=[breakdown(store, by_id[r.run_id]) for r in table],
        recommendation=recommend(table, pairs),
        study=", ".join(sorted({r.study for r in runs})),
        split=", ".join(sorted({r.split for r in runs})),
    )


def report_row(row: LeaderboardRow, facts: dict[str, Any]) -> ReportRow:
    """A new row: the leaderboard row plus the run's facts, with its technique settled."""
    out = ReportRow(**{f.name: getattr(row, f.name) for f in fields(LeaderboardRow)}, **facts)
    return replace(out, technique=technique(out))


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


def _name(row: LeaderboardRow) -> str:
    return row.name


def _ci(row: LeaderboardRow) -> str:
    return f"{row.score:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def _compare(
    a: ReportRow,
    b: ReportRow,
    best: ReportRow,
    pairwise: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    """Is a's score different from b's? The paired test when available, else whether the CIs overlap."""
    pair = pairwise.get((a.run_id, b.run_id))
    if pair is not None:
        return {**pair, "significant": pair["p"] < ALPHA}
    diff = a.score - b.score
    for x, y in ((a, b), (b, a)):
        if x is best and y.p_vs_best is not None:
            return {"p": y.p_vs_best, "diff": diff, "ci": None, "significant": y.p_vs_best < ALPHA}
    overlap = a.ci_low <= b.ci_high and b.ci_low <= a.ci_high
    return {"p": None, "diff": diff, "ci": None, "significant": not overlap}


def _burden(row: ReportRow) -> tuple:
    """What choosing a row costs, most important first: a per-query bill, the technique's setup (training,
    an index), the bill's size, training time, then serving time and memory."""
    tune = row.tune or {}
    # tokens before measured time, as in leaderboard.verdict: time on a shared machine is noisy
    return (
        row.cost_per_1k > 0,
        not on_premise(row),
        TECHNIQUE_RANK[technique(row)],
        row.cost_per_1k,
        tune.get("train_time_s") or 0.0,
        row.tokens_in + row.tokens_out,
        row.time_per_1k_s,
        tune.get("peak_mem_mb") or 0.0,
    )


def _points(diff: float) -> str:
    return f"{round(diff * 100, 1) + 0.0:+.1f} points"  # + 0.0: no "-0.0"


def _diff_text(cmp: dict[str, Any]) -> str:
    parts = [_points(cmp["diff"])]
    if cmp.get("ci"):
        lo, hi = (round(v * 100, 1) + 0.0 for v in cmp["ci"])
        parts.append(f"95% CI of the difference [{lo:+.1f}, {hi:+.1f}]")
    if cmp.get("p") is not None:
        parts.append(f"p = {cmp['p']:.3f}")
    return parts[0] + (f" ({'; '.join(parts[1:])})" if len(parts) > 1 else "")


def _tokens(row: LeaderboardRow) -> str:
    return f"{row.tokens_in + row.tokens_out:.0f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _training_text(row: LeaderboardRow) -> str:
    tune = row.tune or {}
    bits = []
    if tune.get("train_time_s") is not None:
        device = "GPU" if tune.get("device") == "cuda" else "CPU" if tune.get("device") == "cpu" else ""
        bits.append(f"{_duration(tune['train_time_s'])} of {device + ' ' if device else ''}training")
    if tune.get("peak_mem_mb") is not None:
        bits.append(f"{tune['peak_mem_mb']:,.0f} MB peak training memory")
    if tune.get("adapter_mb") is not None:
        bits.append(f"a {tune['adapter_mb']:,.1f} MB adapter to keep")
    return ", ".join(bits)


def _serving_text(row: ReportRow, others: list[ReportRow]) -> str:
    where = "runs on-premise" if on_premise(row) else "calls a remote API"
    if row.model_params:
        where += f" ({row.model_params / 1e6:,.0f}M parameters"
        where += f", {row.model_mb:,.0f} MB of weights)" if row.model_mb else ")"
    money = "no per-query fee" if not row.cost_per_1k else f"${row.cost_per_1k:.2f} per 1,000 queries"
    text = (
        f"Serving {_name(row)}: {where}, {money}, p50 latency {row.latency_p50_ms:.0f} ms, "
        f"{_duration(row.time_per_1k_s)} of model time per 1,000 queries."
    )
    remote = [r for r in others if not on_premise(r)]
    if on_premise(row) and remote:
        text += (
            f" {len(remote)} compared row(s) need a remote API ({', '.join(_name(r) for r in remote[:3])})."
        )
    return text


def recommend(
    table: Sequence[ReportRow],
    pairwise: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> Recommendation:
    """A plain-language recommendation. Only differences the paired tests call significant (p < 0.05) count;
    among the rows tied with the best, the least demanding one wins (no per-query fee, on-premise, prompting
    before retrieval before fine-tuning, then the cheapest and fastest)."""
    pairwise = pairwise or {}
    if not table:
        return Recommendation("none", "No finished runs to compare.")
    ranked = sorted(table, key=lambda r: -r.score)
    best = ranked[0]
    tied = [best] + [r for r in ranked[1:] if not _compare(best, r, best, pairwise)["significant"]]
    pick = min(tied, key=_burden)
    kind = technique(pick)
    n = min(r.n for r in ranked)
    others = [r for r in ranked if r is not pick]

    if len(ranked) > 1 and len(tied) == len(ranked):
        width = max((r.ci_high - r.ci_low) / 2 for r in ranked) * 100
        text = (
            f"No clear winner: no row is significantly better than another on {n} test rows (95% CIs about "
            f"±{width:.0f} points). Take the least demanding one, {_name(pick)} ({TECHNIQUE_NAMES[kind]}, "
            f"{_ci(pick)}), or score more rows to narrow the intervals. {_serving_text(pick, others)}"
        )
        return Recommendation("tie", text, pick)

    lines = []
    best_of = {t: next((r for r in ranked if technique(r) == t), None) for t in TECHNIQUE_RANK}
    if kind == "prompting":
        lines.append("Prompt engineering is enough:")
        if pick is best:
            lines.append(f"{_name(pick)} scores best, {_ci(pick)}.")
        elif technique(best) == "prompting":
            cmp = _compare(pick, best, best, pairwise)
            lines.append(
                f"{_name(pick)} ({_ci(pick)}) is as good as the best row, {_name(best)} ({_ci(best)}; "
                f"{_diff_text(cmp)}), and cheaper: {_tokens(pick)} vs {_tokens(best)} tokens per query."
            )
        else:
            cmp = _compare(pick, best, best, pairwise)
            saved = "at zero training cost" if technique(best) == "fine_tune" else "without a retrieval index"
            lines.append(
                f"{_name(pick)} ({_ci(pick)}) is within the CI of the best row, {_name(best)} "
                f"({TECHNIQUE_NAMES[technique(best)]}, {_ci(best)}; {_diff_text(cmp)}), {saved}."
            )
        for t in ("retrieval", "fine_tune"):
            other = best_of[t]
            if other is not None and other is not best:
                cmp = _compare(pick, other, best, pairwise)
                verdict = (
                    "significantly better than" if cmp["significant"] else "not significantly different from"
                )
                lines.append(
                    f"It is {verdict} the best {TECHNIQUE_NAMES[t]} row, {_name(other)} ({_diff_text(cmp)})."
                )
        if best_of["retrieval"] is None and best_of["fine_tune"] is None:
            lines.append("(This study has no retrieval or fine-tuned rows to weigh against.)")
    else:
        verb = {"fine_tune": "Fine-tune", "retrieval": "Use retrieval"}[kind]
        lines.append(f"{verb}: {_name(pick)} scores {_ci(pick)}.")
        if pick is not best:
            lines.append(
                f"It is within the CI of the best row, {_name(best)} ({_ci(best)}), and cheaper to run."
            )
        base = best_of["prompting"]
        if base is not None:
            lines.append(
                f"Against the best prompt-only row, {_name(base)} ({_ci(base)}): "
                f"{_diff_text(_compare(pick, base, best, pairwise))}."
            )
        else:
            lines.append("(This study has no prompt-only row to weigh against.)")
        if kind == "fine_tune" and _training_text(pick):
            lines.append(f"Cost of the gain: {_training_text(pick)}.")
        if kind == "fine_tune" and best_of["retrieval"] is not None:
            cmp = _compare(pick, best_of["retrieval"], best, pairwise)
            lines.append(f"Against retrieval ({_name(best_of['retrieval'])}): {_diff_text(cmp)}.")
    rest = [_name(r) for r in tied if r is not pick and r is not best]
    if rest:
        lines.append(f"Also within the best row's CI (p >= {ALPHA}): {', '.join(rest)}.")
    worse = [_name(r) for r in ranked if all(r is not t for t in tied)]
    if worse:
        lines.append(f"Significantly worse: {', '.join(worse)}.")
    lines.append(_serving_text(pick, others))
    return Recommendation(kind, " ".join(lines), pick)


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
            f"<title>{escape(_name(r))}: {_ci(r)}, {x_label} {_fmt(xs[i])}</title></circle>"
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


def _frame(fx, fy, xticks, yticks, x_label: str, y_label: str) -> list[str]:
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
            f'<text x="{PAD_L - 6}" y="{fy(t) + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>'
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
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" class="lbl">{escape(_name(r))}</text>'
        )
        out.append(
            f'<line x1="{fx(r.ci_low):.1f}" x2="{fx(r.ci_high):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="6" stroke-linecap="round" stroke-opacity="0.6"/>'
        )
        out.append(
            f'<circle cx="{fx(r.score):.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{escape(_name(r))}: '
            f"{_ci(r)}</title></circle>"
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
        "name": _name(row),
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


def write_report(targets: Sequence[str] = (), out: str | Path | None = None, *, workspace: Workspace) -> Path:
    """Write the report for ``targets`` (task files, task names or run ids; none: the latest study) and
    return its path (default ``<workspace>/reports/<task>-<study>.html``)."""
    data = collect(workspace, resolve_targets(workspace.runs, targets))
    path = Path(out) if out else default_path(data, workspace.reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path
