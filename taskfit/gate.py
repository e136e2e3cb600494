"""The regression gate: is each candidate row significantly worse than its baseline row, below a floor or a
non-inferiority margin, or over a parse-failure or cost limit? Also its Markdown summary and JUnit XML.

Rows are matched by strategy x model (``taskfit.compare.pair``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from taskfit.compare import Comparison, Flip, RowResults, compare, pair
from taskfit.terminal import safe_text


@dataclass(frozen=True)
class Criteria:
    """What a candidate row must meet; None: not checked."""

    alpha: float = 0.05  # significance level of the paired test
    min_score: float | None = None  # the candidate's score on the shared examples must reach this
    margin: float | None = None  # non-inferiority: the difference's lower 95% bound must be above -margin
    max_parse_fail: float | None = None  # share of replies no answer could be read from
    max_cost_per_1k: float | None = None  # $ per 1,000 queries


@dataclass(frozen=True)
class RowVerdict:
    """One compared row and the criteria it fails (none: it passes)."""

    comparison: Comparison
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def name(self) -> str:
        return self.comparison.candidate.name


@dataclass(frozen=True)
class GateResult:
    rows: list[RowVerdict]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def judge(baseline: list[RowResults], candidate: list[RowResults], criteria: Criteria) -> GateResult:
    """Compare each candidate row with its baseline row and apply ``criteria``."""
    verdicts, warnings = [], []
    for base, cand in pair(baseline, candidate):
        c = compare(base, cand)
        if c.coverage_warning():
            warnings.append(c.coverage_warning())
        verdicts.append(RowVerdict(c, failures(c, criteria)))
    return GateResult(verdicts, warnings)


def failures(c: Comparison, criteria: Criteria) -> list[str]:
    """The criteria the candidate row of ``c`` fails, each as a sentence."""
    out = []
    if c.difference < 0 and c.p < criteria.alpha:
        out.append(f"significantly worse: {c.difference:+.3f} (p = {c.p:.3g} < {criteria.alpha:g}, {c.test})")
    if criteria.min_score is not None and c.candidate_score < criteria.min_score:
        out.append(f"score {c.candidate_score:.3f} is below the floor {criteria.min_score:g}")
    if criteria.margin is not None and c.ci_low <= -criteria.margin:
        out.append(f"not non-inferior: the difference's lower 95% bound {c.ci_low:+.3f} is not above "
                   f"-{criteria.margin:g}")
    cand = c.candidate
    if criteria.max_parse_fail is not None and cand.parse_fail_rate > criteria.max_parse_fail:
        out.append(f"parse failures {cand.parse_fail_rate:.1%} exceed {criteria.max_parse_fail:.1%}")
    if criteria.max_cost_per_1k is not None and cand.cost_per_1k > criteria.max_cost_per_1k:
        out.append(f"cost ${cand.cost_per_1k:.4f} per 1k queries exceeds ${criteria.max_cost_per_1k:g}")
    return out


# -- what CI shows ---------------------------------------------------------------------------------------

FLIPS_SHOWN = 10  # per row and direction in the Markdown summary: a comment stays readable


def _cell(value: object, width: int = 120) -> str:
    """Model text in one Markdown table cell: one line, no pipes or markup, control characters escaped."""
    s = re.sub(r"\s+", " ", safe_text(str(value))).strip()
    s = s if len(s) <= width else s[: width - 1] + "…"
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", s)


def markdown(result: GateResult, title: str = "taskfit check") -> str:
    """A short summary for a pull-request comment: verdict, one table row per compared row, the flips."""
    n_failed = sum(not r.passed for r in result.rows)
    head = "passed" if result.passed else f"failed ({n_failed} of {len(result.rows)} rows)"
    lines = [f"## {title}: {head}", "", "| row | baseline | candidate | difference [95% CI] | p | n | "
             "right -> wrong | wrong -> right | verdict |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result.rows:
        c = r.comparison
        verdict = "pass" if r.passed else "**fail**: " + "; ".join(_cell(f) for f in r.failures)
        lines.append(f"| {_cell(r.name)} | {c.baseline_score:.3f} | {c.candidate_score:.3f} | {c.difference:+.3f} "
                     f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.p:.3g} | {c.n} | {len(c.worse)} | {len(c.better)} "
                     f"| {verdict} |")
    lines += [f"\n> {_cell(w, 400)}" for w in result.warnings]
    for r in result.rows:
        for label, flips in (("right -> wrong", r.comparison.worse), ("wrong -> right", r.comparison.better)):
            if not flips:
                continue
            lines += ["", f"### {_cell(r.name)}: {label} ({len(flips)})", "",
                      "| example | input | gold | baseline | candidate |", "| --- | --- | --- | --- | --- |"]
            lines += [_flip_line(f) for f in flips[:FLIPS_SHOWN]]
            if len(flips) > FLIPS_SHOWN:
                lines.append(f"\n{len(flips) - FLIPS_SHOWN} more: `taskfit diff` lists them all")
    return "\n".join(lines) + "\n"


def _flip_line(f: Flip) -> str:
    text = " | ".join(str(v) for v in f.inputs.values())
    return (f"| {_cell(f.example_id, 40)} | {_cell(text)} | {_cell(f.target, 60)} | {_cell(f.baseline_answer, 60)} "
            f"| {_cell(f.candidate_answer, 60)} |")


def junit(result: GateResult, suite: str = "taskfit check") -> str:
    """JUnit XML: one testcase per compared row, a failure element where it fails the gate."""
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.rows)),
                       failures=str(sum(not r.passed for r in result.rows)), errors="0")
    for r in result.rows:
        c = r.comparison
        case = ET.SubElement(ts, "testcase", classname=suite, name=safe_text(r.name))
        out = ET.SubElement(case, "system-out")
        out.text = safe_text(c.summary())
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=safe_text("; ".join(r.failures)), type="regression")
            fail.text = safe_text("\n".join([c.summary(), *(f"right -> wrong: {f.example_id}" for f in c.worse)]))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
