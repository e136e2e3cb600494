"""The recommendation: which row to use, in plain language, from the leaderboard rows and their paired tests.

Only differences the paired tests call significant (p < 0.05) count. Among the rows the data cannot separate
from the best, the pick is the cheapest in total at the user's query volume (``costs.row_cost``) when one is
given, else the least demanding; either way the text states the break-even volume between the best prompt
row and the best fine-tuned row. A pure function of the rows: ``recommend(rows, pairwise, volume=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfit.costs import (
    DOLLARS,
    MACHINE_HOURS,
    TIME_TOLERANCE,
    RowCost,
    Volume,
    break_even,
    cheaper_beyond,
    count,
    model_seconds_per_1k,
    money,
    row_cost,
    train_seconds,
    unit_of,
)
from taskfit.types import ReportRow

ALPHA = 0.05
# how much a technique asks of its user beyond the prompt: retrieval needs an index, fine-tuning a training
# run and an adapter to keep; among rows the data cannot separate, the least demanding one is recommended
TECHNIQUE_RANK = {"prompting": 0, "retrieval": 1, "fine_tune": 2}
TECHNIQUE_NAMES = {"prompting": "prompt engineering", "retrieval": "retrieval", "fine_tune": "fine-tuning"}
RETRIEVAL_STRATEGIES = {"rag"}


@dataclass
class Recommendation:
    choice: str  # prompting | retrieval | fine_tune | tie | none
    text: str
    row: ReportRow | None = None
    costs: list[tuple[ReportRow, RowCost]] = field(default_factory=list)  # every row, best score first
    unit: str = DOLLARS
    volume: Volume | None = None
    latency_p50_ms: float | None = None
    break_even: float | None = None  # queries from which break_even_rows[1] costs less than [0]
    break_even_rows: tuple[ReportRow, ReportRow] | None = None  # (best prompt, best fine-tuned)
    tolerance: float = TIME_TOLERANCE  # relative uncertainty of the timed costs the pick allowed for
    volume_range: tuple[float, float] | None = None  # volumes (queries) over which the pick stays the same


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


def row_name(row: ReportRow) -> str:
    """"strategy x model", as the leaderboard names a row."""
    return row.name


def score_text(row: ReportRow) -> str:
    return f"{row.score:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def compare_rows(
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
        train_seconds(row),
        row.tokens_in + row.tokens_out,
        model_seconds_per_1k(row),
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


def _tokens(row: ReportRow) -> str:
    return f"{(row.tokens_in or 0) + (row.tokens_out or 0):.0f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _training_text(row: ReportRow) -> str:
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
        weights_mb = row.size_mb or row.model_mb  # measured on disk (a shrunk model's), else parameters x width
        where += f", {weights_mb:,.0f} MB of weights)" if weights_mb else ")"
    fee = "no per-query fee" if not row.cost_per_1k else f"${row.cost_per_1k:.2f} per 1,000 queries"
    text = (
        f"Serving {row_name(row)}: {where}, {fee}, p50 latency {row.latency_p50_ms:.0f} ms, "
        f"{_duration(model_seconds_per_1k(row))} of model time per 1,000 queries"
        + (" (its work x calibrated unit costs)." if row.cost_basis == "work" else ".")
    )
    remote = [r for r in others if not on_premise(r)]
    if on_premise(row) and remote:
        text += (
            f" {len(remote)} compared row(s) need a remote API ({', '.join(row_name(r) for r in remote[:3])})."
        )
    return text


def recommend(
    table: Sequence[ReportRow],
    pairwise: dict[tuple[str, str], dict[str, Any]] | None = None,
    *,
    volume: Volume | None = None,
    latency_p50_ms: float | None = None,
    tolerance: float = TIME_TOLERANCE,
) -> Recommendation:
    """A plain-language recommendation. Only differences the paired tests call significant (p < 0.05) count.

    Rows over ``latency_p50_ms`` are set aside; among the remaining rows the data cannot separate from the
    best of them, the pick is the cheapest in total at ``volume`` (one-time + per-query x volume), else,
    with no volume, the least demanding (no per-query fee, on-premise, prompting before retrieval before
    fine-tuning, then the cheapest and fastest). The text always gives the break-even volume between the best
    prompt row and the best fine-tuned row.
    """
    pairwise = pairwise or {}
    if not table:
        return Recommendation("none", "No finished runs to compare.")
    ranked = sorted(table, key=lambda r: -r.score)
    unit = unit_of(ranked)
    costs = {id(r): row_cost(r, unit) for r in ranked}
    economics = _economics(ranked, costs)
    facts = {"costs": [(r, costs[id(r)]) for r in ranked], "unit": unit, "volume": volume,
             "latency_p50_ms": latency_p50_ms, "tolerance": tolerance, **economics}
    top = ranked[0]  # the row p_vs_best was computed against
    fast = [r for r in ranked if latency_p50_ms is None or (r.latency_p50_ms or 0.0) <= latency_p50_ms]
    slow = [r for r in ranked if all(r is not f for f in fast)]
    if not fast:
        quickest = min(ranked, key=lambda r: r.latency_p50_ms or 0.0)
        return Recommendation("none", f"No row meets the p50 latency bound of {latency_p50_ms:,.0f} ms; the "
                              f"fastest is {row_name(quickest)} at {quickest.latency_p50_ms:,.0f} ms.",
                              None, **facts)
    best = fast[0]
    tied = [best] + [r for r in fast[1:] if not compare_rows(best, r, top, pairwise)["significant"]]
    noise: list[str] = []
    if volume is not None:
        pick = pick_at(tied, costs, volume.queries, tolerance)
        facts["volume_range"] = _volume_range(tied, costs, volume.queries, tolerance)
        noise = _noise_lines(pick, tied, costs, unit, volume, tolerance, facts["volume_range"])
    else:
        pick = min(tied, key=_burden)
    kind = technique(pick)
    n = min(r.n for r in ranked)
    others = [r for r in ranked if r is not pick]
    at = f"At {volume.text()}, " if volume is not None else ""

    def total(r: ReportRow) -> str:
        return money(costs[id(r)].total(volume.queries), unit) if volume is not None else ""

    tail = (noise + _cost_lines(pick, costs, unit, volume, economics) + _latency_lines(slow, top, latency_p50_ms)
            + _twin_lines(ranked, top, pairwise))
    if len(fast) > 1 and len(tied) == len(fast):
        width = max((r.ci_high - r.ci_low) / 2 for r in fast) * 100
        how = f"the cheapest at this volume ({total(pick)} in total)" if volume else "the least demanding one"
        text = (
            f"No clear winner: no row is significantly better than another on {n} test rows (95% CIs about "
            f"±{width:.0f} points). Take {how}, {row_name(pick)} ({TECHNIQUE_NAMES[kind]}, "
            f"{score_text(pick)}), or score more rows to narrow the intervals. "
            + " ".join([*tail, _serving_text(pick, others)])
        )
        return Recommendation("tie", at + text[0].lower() + text[1:] if at else text, pick, **facts)

    lines = []
    best_of = {t: next((r for r in fast if technique(r) == t), None) for t in TECHNIQUE_RANK}
    if kind == "prompting":
        lines.append(f"{at}prompt engineering is enough:" if at else "Prompt engineering is enough:")
        if pick is best:
            lines.append(f"{row_name(pick)} scores best, {score_text(pick)}.")
        elif technique(best) == "prompting":
            cmp = compare_rows(pick, best, top, pairwise)
            cheaper = (f"cheaper at this volume: {total(pick)} vs {total(best)}" if volume else
                       f"cheaper: {_tokens(pick)} vs {_tokens(best)} tokens per query")
            lines.append(
                f"{row_name(pick)} ({score_text(pick)}) is as good as the best row, {row_name(best)} "
                f"({score_text(best)}; {_diff_text(cmp)}), and {cheaper}."
            )
        else:
            cmp = compare_rows(pick, best, top, pairwise)
            if volume is not None:
                saved = f"and cheaper at this volume: {total(pick)} vs {total(best)} in total"
            else:
                saved = "without training a model" if technique(best) == "fine_tune" else "without a retrieval index"
            lines.append(
                f"{row_name(pick)} ({score_text(pick)}) is within the CI of the best row, {row_name(best)} "
                f"({TECHNIQUE_NAMES[technique(best)]}, {score_text(best)}; {_diff_text(cmp)}), {saved}."
            )
        for t in ("retrieval", "fine_tune"):
            other = best_of[t]
            if other is not None and other is not best:
                cmp = compare_rows(pick, other, top, pairwise)
                verdict = (
                    "significantly better than" if cmp["significant"] else "not significantly different from"
                )
                lines.append(
                    f"It is {verdict} the best {TECHNIQUE_NAMES[t]} row, {row_name(other)} ({_diff_text(cmp)})."
                )
        if best_of["retrieval"] is None and best_of["fine_tune"] is None:
            lines.append("(This study has no retrieval or fine-tuned rows to weigh against.)")
    else:
        verb = {"fine_tune": "fine-tune", "retrieval": "use retrieval"}[kind]
        lines.append(f"{at}{verb}:" if at else f"{verb[0].upper() + verb[1:]}:")
        lines[-1] += f" {row_name(pick)} scores {score_text(pick)}."
        if pick is not best:
            cheaper = f"cheaper at this volume: {total(pick)} vs {total(best)}" if volume else "cheaper to run"
            lines.append(
                f"It is within the CI of the best row, {row_name(best)} ({score_text(best)}), and {cheaper}."
            )
        base = best_of["prompting"]
        if base is not None:
            lines.append(
                f"Against the best prompt-only row, {row_name(base)} ({score_text(base)}): "
                f"{_diff_text(compare_rows(pick, base, top, pairwise))}"
                + (f"; at this volume it costs {total(pick)} against {total(base)}." if volume else ".")
            )
        elif slow:
            lines.append("(No prompt-only row meets the latency bound to weigh against.)")
        else:
            lines.append("(This study has no prompt-only row to weigh against.)")
        if kind == "fine_tune" and _training_text(pick):
            lines.append(f"Cost of the gain: {_training_text(pick)}.")
        if kind == "fine_tune" and best_of["retrieval"] is not None:
            cmp = compare_rows(pick, best_of["retrieval"], top, pairwise)
            lines.append(f"Against retrieval ({row_name(best_of['retrieval'])}): {_diff_text(cmp)}.")
    rest = [row_name(r) for r in tied if r is not pick and r is not best]
    if rest:
        lines.append(f"Also within the best row's CI (p >= {ALPHA}): {', '.join(rest)}.")
    worse = [row_name(r) for r in fast if all(r is not t for t in tied)]
    if worse:
        lines.append(f"Significantly worse: {', '.join(worse)}.")
    lines += tail
    lines.append(_serving_text(pick, others))
    return Recommendation(kind, " ".join(lines), pick, **facts)


def pick_at(tied: Sequence[ReportRow], costs: dict[int, RowCost], queries: float, tolerance: float) -> ReportRow:
    """The row to use at ``queries`` among rows tied on score: the cheapest, unless another is within the cost
    uncertainty of it; then the higher-scoring, then the less demanding of those."""
    cheapest = min(tied, key=lambda r: (round(costs[id(r)].total(queries), 9), _burden(r)))
    close = [r for r in tied if not cheaper_beyond(costs[id(cheapest)], costs[id(r)], queries, tolerance)]
    return min(close, key=lambda r: (-r.score, _burden(r)))


# volumes the sensitivity line tries: 20 a decade from 1 to 10^12 queries
_VOLUME_GRID = [10 ** (k / 20) for k in range(0, 241)]


def _volume_range(tied: Sequence[ReportRow], costs: dict[int, RowCost], queries: float,
                  tolerance: float) -> tuple[float, float]:
    """The range of volumes around ``queries`` at which ``pick_at`` gives the same row, found on a grid then
    narrowed by bisection (0 / inf: the pick holds at every lower / higher volume tried, down to 1 / up to
    10^12 queries)."""
    pick = pick_at(tied, costs, queries, tolerance)

    def same(v: float) -> bool:
        return pick_at(tied, costs, v, tolerance) is pick

    def edge(inside: float, outside: float) -> float:
        for _ in range(40):  # the pick changes once between two grid points 12% apart: bisect in log space
            mid = (inside * outside) ** 0.5
            inside, outside = (mid, outside) if same(mid) else (inside, mid)
        return inside

    lo = next((v for v in reversed(_VOLUME_GRID) if v < queries and not same(v)), None)
    hi = next((v for v in _VOLUME_GRID if v > queries and not same(v)), None)
    return (0.0 if lo is None else edge(queries, lo), float("inf") if hi is None else edge(queries, hi))


def _noise_lines(pick: ReportRow, tied: Sequence[ReportRow], costs: dict[int, RowCost], unit: str,
                 volume: Volume, tolerance: float, span: tuple[float, float]) -> list[str]:
    """Why a cheaper row lost to the pick (a cost gap inside the timing uncertainty), and the volumes over
    which the pick holds."""
    lines = []
    q = volume.queries
    cheapest = min(tied, key=lambda r: (round(costs[id(r)].total(q), 9), _burden(r)))
    if cheapest is not pick:
        why = "scores higher" if pick.score > cheapest.score else "is less demanding"
        lines.append(
            f"{row_name(cheapest)} would cost a little less at this volume ({money(costs[id(cheapest)].total(q), unit)}"
            f" vs {money(costs[id(pick)].total(q), unit)}), but by less than the uncertainty of their model time "
            f"({_margins(costs[id(cheapest)], costs[id(pick)], tolerance)}), so {row_name(pick)}, which {why}, "
            f"is recommended."
        )
    if len(tied) > 1:
        lo, hi = span
        per = f" a {volume.per}" if volume.per else ""
        if lo == 0 and hi == float("inf"):
            where = "at any volume"
        elif lo == 0:
            where = f"up to about {count(hi)} queries{per}"
        elif hi == float("inf"):
            where = f"from about {count(lo)} queries{per} up"
        else:
            where = f"from about {count(lo)} to {count(hi)} queries{per}"
        margins = sorted({_margin(costs[id(r)], tolerance) for r in tied})
        lines.append(f"This pick holds {where} (costs' timed parts ±{'/'.join(f'{m:.0%}' for m in margins)}).")
    return lines


def _margin(cost: RowCost, tolerance: float) -> float:
    return tolerance if cost.uncertainty is None else cost.uncertainty


def _margins(a: RowCost, b: RowCost, tolerance: float) -> str:
    """'±25%', or '±6% and ±25%' when the two costs are known to different precision."""
    ma, mb = _margin(a, tolerance), _margin(b, tolerance)
    return f"±{ma:.0%}" if round(ma, 2) == round(mb, 2) else f"±{ma:.0%} and ±{mb:.0%}"


def _twin_lines(ranked: Sequence[ReportRow], top: ReportRow,
                pairwise: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """A distilled student that the data cannot separate from the same student trained on gold labels:
    the teacher's labels did not measurably help or hurt, so the cheaper labels are the only argument."""
    by_tune = {r.tune["id"]: r for r in ranked if r.tune and r.tune.get("id")}
    lines = []
    for student in ranked:
        gold = by_tune.get(((student.tune or {}).get("distill") or {}).get("gold_tune") or "")
        if gold is None or gold is student:
            continue
        cmp = compare_rows(student, gold, top, pairwise)
        if not cmp["significant"]:
            lines.append(
                f"The distilled student {row_name(student)} ({score_text(student)}) is tied with its twin trained "
                f"on the gold labels, {row_name(gold)} ({score_text(gold)}; {_diff_text(cmp)}): the teacher's "
                f"labels neither helped nor hurt measurably."
            )
    return lines


def _economics(ranked: Sequence[ReportRow], costs: dict[int, RowCost]) -> dict[str, Any]:
    """The best prompt row, the best fine-tuned row and the volume from which the latter is cheaper."""
    prompt = next((r for r in ranked if technique(r) == "prompting"), None)
    tuned = next((r for r in ranked if technique(r) == "fine_tune"), None)
    if prompt is None or tuned is None:
        return {"break_even": None, "break_even_rows": None}
    return {"break_even": break_even(costs[id(prompt)], costs[id(tuned)]), "break_even_rows": (prompt, tuned)}


def _cost_lines(pick: ReportRow, costs: dict[int, RowCost], unit: str, volume: Volume | None,
                economics: dict[str, Any]) -> list[str]:
    """The pick's total cost at the volume, and the break-even sentence."""
    lines = []
    if volume is not None:
        c = costs[id(pick)]
        parts = [f"{money(c.per_query * 1000, unit)} per 1,000 queries"]
        if c.one_time:
            parts.insert(0, f"{money(c.one_time, unit)} once")
        lines.append(f"Total cost of {row_name(pick)} at {volume.text()}: {money(c.total(volume.queries), unit)} "
                     f"({' + '.join(parts)}).")
    if economics["break_even_rows"] is None:
        return lines
    prompt, tuned = economics["break_even_rows"]
    cp, ct = costs[id(prompt)], costs[id(tuned)]
    rates = (f"{money(ct.one_time, unit)} once, then {money(ct.per_query * 1000, unit)} per 1,000 queries "
             f"against {money(cp.per_query * 1000, unit)}")
    be = economics["break_even"]
    if be is None:
        lines.append(f"The best fine-tuned row, {row_name(tuned)}, never costs less than the best prompt row, "
                     f"{row_name(prompt)} ({rates}).")
    elif be == 0:
        lines.append(f"The best fine-tuned row, {row_name(tuned)}, costs less than the best prompt row, "
                     f"{row_name(prompt)}, at any volume ({rates}).")
    else:
        per = f" a {volume.per}" if volume is not None and volume.per else ""
        lines.append(f"Break-even: from about {count(be)} queries{per} the best fine-tuned row, {row_name(tuned)}, "
                     f"costs less in total than the best prompt row, {row_name(prompt)} ({rates}).")
        if volume is None:
            lines.append("Give a query volume (--volume) to price the choice.")
    if unit == MACHINE_HOURS:
        lines.append("(No prices are set: costs are machine-hours measured here; set `costs.price_per_hour` "
                     "in the task file to see dollars.)")
    return lines


def _latency_lines(slow: list[ReportRow], top: ReportRow, bound: float | None) -> list[str]:
    if not slow:
        return []
    rows = ", ".join(f"{row_name(r)} ({r.latency_p50_ms:,.0f} ms)" for r in slow)
    text = f"Over the p50 latency bound of {bound:,.0f} ms, so not considered: {rows}."
    if any(r is top for r in slow):
        text += f" That includes the best row overall, {row_name(top)} ({score_text(top)})."
    return [text]
