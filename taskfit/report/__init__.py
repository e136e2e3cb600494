"""The decision report: one self-contained HTML file that answers "prompting, retrieval or fine-tuning?".

One module per step: ``taskfit.report.data`` chooses the runs and collects what the report shows of them
(``collect`` -> ``ReportData``), ``taskfit.recommend`` turns the rows into a plain-language recommendation (a
pure function), ``taskfit.report.plots`` draws the plots as inline SVG, and ``taskfit.report.html`` renders and
writes the file. The names below are imported on first use, so that one step (``taskfit.report.plots``) loads
without the others. Import a step as ``from taskfit.report import plots``: in ``import taskfit.report.plots as m``
Python reads ``taskfit.report``, which is the API function ``taskfit.report``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "taskfit.report.data": ("Breakdown", "LOOPBACK_HOSTS", "ReportData", "breakdown", "collect",
                            "latest_study_runs", "pairwise_tests", "report_data", "report_row", "resolve_targets"),
    "taskfit.report.plots": ("COLORS", "ci_bars_svg", "curve_svg", "line_svg", "pareto_front", "scatter_svg",
                             "volume_svg"),
    "taskfit.report.html": ("default_path", "render_html", "save", "tune_view", "write_report"),
    "taskfit.recommend": ("Recommendation", "recommend"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = ["COLORS", "LOOPBACK_HOSTS", "Breakdown", "Recommendation", "ReportData", "breakdown", "ci_bars_svg",
           "collect", "curve_svg", "default_path", "latest_study_runs", "line_svg", "pairwise_tests", "pareto_front",
           "recommend", "render_html", "report_data", "report_row", "resolve_targets", "save", "scatter_svg",
           "tune_view", "volume_svg", "write_report"]

if TYPE_CHECKING:
    from taskfit.recommend import Recommendation, recommend
    from taskfit.report.data import (
        LOOPBACK_HOSTS,
        Breakdown,
        ReportData,
        breakdown,
        collect,
        latest_study_runs,
        pairwise_tests,
        report_data,
        report_row,
        resolve_targets,
    )
    from taskfit.report.html import default_path, render_html, save, tune_view, write_report
    from taskfit.report.plots import (
        COLORS,
        ci_bars_svg,
        curve_svg,
        line_svg,
        pareto_front,
        scatter_svg,
        volume_svg,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'taskfit.report' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
