"""The report's content: which runs a report covers, and what it shows of them (``ReportData``).

``collect`` gathers the leaderboard rows of the runs, each with its technique, where it runs and its prices,
per-label confusion matrices or error breakdowns from the stored predictions, paired tests between every two
rows and the learning curves among them; ``taskfit.recommend`` turns the rows into the recommendation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from taskfit.baselines import resolve
from taskfit.compare import Comparison, compare, pair, run_results
from taskfit.curve import CURVE_STUDY, LearningCurve, curves, latest_curve_runs
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows as leaderboard_rows
from taskfit.recommend import RETRIEVAL_STRATEGIES, Recommendation, on_premise, recommend, technique
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
    baseline: str | None = None  # the reference the rows are compared with (`taskfit report --baseline`)
    compared: list[Comparison] = field(default_factory=list)  # each row that has a baseline row, vs that row


# -- choosing runs ---------------------------------------------------------------------------------------


def latest_study_runs(store: Store, task_name: str) -> list[RunRecord]:
    """The finished runs of a task's latest study, one per strategy x model.

    A study is one ``taskfit run``/``eval`` invocation. An arm resumed in that invocation keeps the id of the
    study it started in, so runs of the task finished after the latest study began count as part of it; a
    finished run the study reused (same settings: nothing ran again) is one of its runs too.
    """
    runs = [r for r in store.list(limit=1_000_000)
            if r.task_name == task_name and not r.study.startswith(CURVE_STUDY)]
    if not runs:
        raise TaskfitError(f"no runs of task {task_name!r}; see `taskfit runs`")
    by_id = {r.id: r for r in runs}
    reuses = [(when, study, by_id[rid]) for study, rid, when in store.reused(task_name)
              if rid in by_id and not study.startswith(CURVE_STUDY)]
    events = [(r.created, r.study, r) for r in runs] + reuses
    study = max(events, key=lambda e: e[0])[1]
    started = min(when for when, s, _ in events if s == study)
    members = {r.id for _, s, r in events if s == study}
    last_used = {r.id: r.created for r in runs}
    for when, _, r in reuses:
        last_used[r.id] = max(last_used[r.id], when)
    chosen: dict[tuple[str, str], RunRecord] = {}
    for r in sorted(runs, key=lambda r: -last_used[r.id]):  # the newest use of each strategy x model wins
        if r.status != "done":
            continue
        if r.id in members or (r.finished or 0) >= started:
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
    urls = model.get("base_url") or ""
    host = urlparse(urls if isinstance(urls, str) else urls[0]).hostname  # replicas: the first names the place
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
    tolerance: float | None = None,
) -> ReportData:
    """Everything the report shows, computed from the runs and predictions stored in ``workspace``.

    Args:
        volume, latency_p50_ms: what the recommendation prices at and the latency it must meet.
        prices: a task file's config whose ``costs`` and models' ``price_per_hour`` replace the prices stored
            with the runs (prices change no prediction, so a report can reprice stored runs).
        tolerance: the relative uncertainty of timed costs (``costs.tolerance``; None: the default).
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
        recommendation=recommend(table, pairs, volume=volume, latency_p50_ms=latency_p50_ms,
                                 **({} if tolerance is None else {"tolerance": tolerance})),
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


def report_data(
    workspace: Workspace,
    targets: Sequence[str] = (),
    *,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
    baseline: str | None = None,
) -> ReportData:
    """The report's content for ``targets`` (task files, task names or run ids; none: the latest study).
    A task file among the targets also supplies the current prices; the task's `costs.volume` and
    `costs.latency_p50_ms` apply when ``volume`` and ``latency_p50_ms`` are not given. ``baseline`` (a run id,
    baseline name or saved file) adds a "compared with" section: each row against its baseline row."""
    prices = None
    for target in targets:
        if Path(target).suffix in (".yaml", ".yml") and Path(target).is_file():
            from taskfit.taskfile import load_task

            prices = load_task(target).config
    runs = resolve_targets(workspace.runs, targets)
    goals = prices.costs.model_dump() if prices is not None else (
        (runs[-1].config.get("task") or {}).get("costs") or {} if runs else {})
    if volume is None and goals.get("volume"):  # the task file's own volume when none is asked for
        from taskfit.costs import parse_volume

        volume = parse_volume(str(goals["volume"]))
    if latency_p50_ms is None:
        latency_p50_ms = goals.get("latency_p50_ms")
    data = collect(workspace, runs, volume=volume, latency_p50_ms=latency_p50_ms, prices=prices,
                   tolerance=goals.get("tolerance"))
    if baseline is None:
        return data
    return replace(data, baseline=baseline, compared=compared_with(workspace, runs, baseline))


def compared_with(workspace: Workspace, runs: Sequence[RunRecord], baseline: str) -> list[Comparison]:
    """Each of ``runs`` compared with the baseline row of the same strategy x model (one row on each side:
    compared whatever their names); rows without one are left out."""
    rows = [run_results(workspace, r) for r in runs]
    return [compare(b, c) for b, c in pair(resolve(baseline, workspace), rows, strict=False)]

