"""The report as one self-contained HTML file: ``render_html`` fills ``templates/report.html.j2`` with the
content and its inline SVG plots, so the file opens offline with no external fetch."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskfit.costs import basis_text, count
from taskfit.costs import money as money_text
from taskfit.recommend import TECHNIQUE_NAMES, on_premise, row_name, technique
from taskfit.report.data import ReportData, report_data
from taskfit.report.plots import (
    COLORS,
    ci_bars_svg,
    curve_svg,
    line_svg,
    pareto_front,
    scatter_svg,
    volume_svg,
)
from taskfit.types import LeaderboardRow, ReportRow

if TYPE_CHECKING:
    from taskfit.costs import Volume
    from taskfit.workspace import Workspace


def _readable(v: Any) -> Any:
    """Numbers as people read them: thousands separators, at most 3 decimals."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return v
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"


def _labelled(values: dict[str, Any], labels: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    """(label, value) for each (key, label) whose value is present and not None, in the order given."""
    return [(label, values[key]) for key, label in labels if values.get(key) is not None]


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
    facts = _labelled(tune, (
        ("method", "method"),
        ("objective", "objective"),
        ("base_model", "base model"),
        ("device", "device"),
        ("train_time_s", "training time (s)"),
        ("peak_mem_mb", "peak memory (MB)"),
        ("trainable_params", "trainable parameters"),
        ("trainable_pct", "trainable %"),
        ("adapter_mb", "adapter size (MB)"),
    ))
    forgetting = _labelled(tune.get("forgetting") or {}, (
        ("general_task", "general task"),
        ("ppl_before", "perplexity before"),
        ("ppl_after", "perplexity after"),
        ("score_before", "score before"),
        ("score_after", "score after"),
    ))
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
        loader=FileSystemLoader(Path(__file__).parents[1] / "templates"),
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
        basis=basis_text,
        inf=float("inf"),
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


def write_report(
    targets: Sequence[str] = (),
    out: str | Path | None = None,
    *,
    workspace: Workspace,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
    baseline: str | None = None,
) -> Path:
    """Write the report for ``targets`` (task files, task names or run ids; none: the latest study) and
    return its path (default ``<workspace>/reports/<task>-<study>.html``); ``baseline`` adds a "compared
    with" section."""
    data = report_data(workspace, targets, volume=volume, latency_p50_ms=latency_p50_ms, baseline=baseline)
    return save(data, out, workspace=workspace)


def save(data: ReportData, out: str | Path | None = None, *, workspace: Workspace) -> Path:
    """Write ``data`` as HTML to ``out`` (default: ``<workspace>/reports/<task>-<study>.html``); its path."""
    path = Path(out) if out else default_path(data, workspace.reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path
