"""The report's plots as inline SVG strings, with no plotting library: scores with their CIs, score against cost
or latency with the Pareto front, total cost against query volume, learning and training curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from taskfit.costs import count
from taskfit.costs import money as money_text
from taskfit.recommend import Recommendation, row_name, score_text, technique
from taskfit.types import ReportRow

if TYPE_CHECKING:
    from taskfit.curve import LearningCurve

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 320, 64, 16, 16, 48
COLORS = {"prompting": "#2563eb", "retrieval": "#059669", "fine_tune": "#d97706"}


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


def _marker(x: float, color: str, title: str) -> str:
    """A dashed vertical line across the plot area at pixel ``x``, titled: a volume or size the plot marks."""
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="{color}" '
            f'stroke-dasharray="4 3"><title>{escape(title)}</title></line>')


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
        out.append(_marker(fx(rec.volume.queries), "#111827", rec.volume.text()))
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
        out.append(_marker(fx(curve.matches_from), "#dc2626",
                           f"matches the best prompt from {curve.matches_from:,} rows"))
    out.append("</svg>")
    return "\n".join(out)

