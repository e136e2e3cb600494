"""Two rows on the same examples: the paired test, the difference with its 95% CI, and the examples that flipped.

A row's per-example results (``RowResults``) come from a stored run or from a saved file (``taskfit eval --json
--per-example``, ``taskfit baseline export``); ``compare`` pairs two of them by example id. This is what
``taskfit diff`` prints and what ``taskfit check`` gates on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows as leaderboard_rows
from taskfit.stats import bootstrap_interval, paired_p

if TYPE_CHECKING:
    from taskfit.store import RunRecord
    from taskfit.workspace import Workspace

RIGHT = 0.5  # a score above this counts as right, as McNemar's test counts it (taskfit.stats.mcnemar_p)


@dataclass(frozen=True)
class ExampleResult:
    """One example's outcome in one row: what the row answered and how it scored."""

    id: str
    score: float
    answer: str | None = None
    target: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    parse_failed: int = 0

    @property
    def right(self) -> bool:
        return self.score > RIGHT


@dataclass(frozen=True)
class RowResults:
    """A strategy x model row with its per-example results; ``source`` says where it was read from."""

    strategy: str
    model: str
    examples: list[ExampleResult]
    metric: str = ""
    binary: bool = True  # 0/1 scores: McNemar's test; otherwise the paired bootstrap
    run_id: str = ""
    split: str | None = None
    limit: int | None = None
    score: float = 0.0
    parse_fail_rate: float = 0.0
    cost_per_1k: float = 0.0
    source: str = ""

    @property
    def name(self) -> str:
        return f"{self.strategy} x {self.model}"

    def per_example_json(self) -> dict[str, Any]:
        """The keys ``--per-example`` adds to a ``--json`` row (docs/json.md)."""
        return {"binary": self.binary, "split": self.split, "limit": self.limit,
                "examples": [asdict(e) for e in self.examples]}

    @classmethod
    def from_json(cls, row: Any, where: str) -> RowResults:
        """A row of a saved ``--json --per-example`` file; ``where`` names it in errors (file and row)."""
        if not isinstance(row, dict):
            raise TaskfitError(f"{where}: expected a JSON object (a leaderboard row)")
        for key in ("strategy", "model"):
            if not isinstance(row.get(key), str):
                raise TaskfitError(f"{where}: field {key!r} is missing or not a string")
        if not isinstance(row.get("examples"), list):
            raise TaskfitError(f"{where}: field 'examples' is missing: save rows with `taskfit eval ... --json "
                               "--per-example` or `taskfit baseline export`")
        examples = []
        for i, e in enumerate(row["examples"]):
            try:
                examples.append(ExampleResult(id=str(e["id"]), score=float(e["score"]), answer=e.get("answer"),
                                              target=str(e.get("target", "")), inputs=dict(e.get("inputs") or {}),
                                              parse_failed=int(e.get("parse_failed", 0))))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise TaskfitError(f"{where}: examples[{i}]: needs 'id' and a numeric 'score' ({exc})") from None
        scores = [e.score for e in examples]
        return cls(strategy=row["strategy"], model=row["model"], examples=examples, metric=str(row.get("metric", "")),
                   binary=bool(row.get("binary", all(s in (0.0, 1.0) for s in scores))),
                   run_id=str(row.get("run_id", "")), split=row.get("split"), limit=row.get("limit"),
                   score=float(row.get("score", sum(scores) / len(scores) if scores else 0.0)),
                   parse_fail_rate=float(row.get("parse_fail_rate", 0.0)),
                   cost_per_1k=float(row.get("cost_per_1k", 0.0)), source=where)


def run_results(workspace: Workspace, run: RunRecord) -> RowResults:
    """A stored run's row (as the leaderboard computes it) with its per-example results."""
    row = leaderboard_rows(workspace, [run])[0]
    preds = workspace.runs.predictions(run.id, with_trace=False)
    binary = run.config.get("binary")
    if binary is None:  # runs stored before the flag was recorded
        binary = all(p.score in (0.0, 1.0) for p in preds)
    return RowResults(
        strategy=run.strategy, model=run.model, metric=row.metric, binary=bool(binary), run_id=run.id,
        split=run.split, limit=run.config.get("limit"), score=row.score, parse_fail_rate=row.parse_fail_rate,
        cost_per_1k=row.cost_per_1k, source=f"run {run.id}",
        examples=[ExampleResult(id=p.example_id, score=p.score, answer=p.answer, target=p.target, inputs=p.inputs,
                                parse_failed=p.parse_failed) for p in preds])


@dataclass(frozen=True)
class Flip:
    """An example both rows answered, with both answers: right -> wrong, wrong -> right, or another answer."""

    example_id: str
    inputs: dict[str, Any]
    target: str
    baseline_answer: str | None
    candidate_answer: str | None
    baseline_score: float
    candidate_score: float


@dataclass(frozen=True)
class Comparison:
    """Candidate vs baseline on their shared examples: scores, difference (candidate - baseline) with its 95%
    CI (paired bootstrap of the per-example differences), the paired test's p, and the examples that changed."""

    baseline: RowResults
    candidate: RowResults
    n: int  # shared examples
    only_baseline: int
    only_candidate: int
    baseline_score: float  # on the shared examples
    candidate_score: float
    difference: float
    ci_low: float
    ci_high: float
    p: float
    test: str  # McNemar | paired bootstrap
    worse: list[Flip]  # right in the baseline, wrong in the candidate
    better: list[Flip]  # wrong in the baseline, right in the candidate
    changed: list[Flip]  # another answer, same side of right/wrong

    def summary(self) -> str:
        """One line: both scores, the difference with its CI, p, and how many examples flipped."""
        return (f"{self.baseline.name} {self.baseline_score:.3f} -> {self.candidate.name} "
                f"{self.candidate_score:.3f}: difference {self.difference:+.3f} [95% CI {self.ci_low:+.3f}, "
                f"{self.ci_high:+.3f}], p = {self.p:.3g} ({self.test}), n = {self.n}; "
                f"{len(self.worse)} right -> wrong, {len(self.better)} wrong -> right")

    def coverage_warning(self) -> str | None:
        """Why the two rows' examples differ, when they do."""
        if not (self.only_baseline or self.only_candidate):
            return None
        return (f"{self.candidate.name}: {self.only_baseline} examples only in the baseline and "
                f"{self.only_candidate} only in the candidate; compared on the {self.n} shared")

    def to_json(self) -> dict[str, Any]:
        """The ``taskfit diff --json`` object (docs/json.md)."""
        return {"baseline": _side(self.baseline), "candidate": _side(self.candidate), "n": self.n,
                "only_baseline": self.only_baseline, "only_candidate": self.only_candidate,
                "baseline_score": self.baseline_score, "candidate_score": self.candidate_score,
                "difference": self.difference, "ci_low": self.ci_low, "ci_high": self.ci_high, "p": self.p,
                "test": self.test, "worse": [asdict(f) for f in self.worse],
                "better": [asdict(f) for f in self.better], "changed": [asdict(f) for f in self.changed]}


def _side(r: RowResults) -> dict[str, Any]:
    """Which row a side of a ``--json`` comparison is."""
    return {"strategy": r.strategy, "model": r.model, "run_id": r.run_id, "source": r.source, "metric": r.metric}


def compare(baseline: RowResults, candidate: RowResults) -> Comparison:
    """Pair ``candidate`` with ``baseline`` by example id; an error when they share no example."""
    base = {e.id: e for e in baseline.examples}
    shared = [e for e in candidate.examples if e.id in base]
    if not shared:
        raise TaskfitError(f"{candidate.name} ({candidate.source}) and {baseline.name} ({baseline.source}) share no "
                           "example ids: they were scored on different data (another split, file or limit)")
    a = [base[e.id].score for e in shared]
    b = [e.score for e in shared]
    binary = baseline.binary and candidate.binary
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap_interval(diffs)
    worse, better, changed = [], [], []
    for e in shared:
        old = base[e.id]
        flip = Flip(example_id=e.id, inputs=e.inputs or old.inputs, target=e.target or old.target,
                    baseline_answer=old.answer, candidate_answer=e.answer, baseline_score=old.score,
                    candidate_score=e.score)
        if old.right and not e.right:
            worse.append(flip)
        elif e.right and not old.right:
            better.append(flip)
        elif old.answer != e.answer or old.score != e.score:
            changed.append(flip)
    n = len(shared)
    return Comparison(
        baseline=baseline, candidate=candidate, n=n, only_baseline=len(base) - n,
        only_candidate=len(candidate.examples) - n, baseline_score=sum(a) / n, candidate_score=sum(b) / n,
        difference=sum(diffs) / n, ci_low=lo, ci_high=hi, p=paired_p(a, b, binary),
        test="McNemar" if binary else "paired bootstrap", worse=worse, better=better, changed=changed)


def pair(baseline: list[RowResults], candidate: list[RowResults], *,
         strict: bool = True) -> list[tuple[RowResults, RowResults]]:
    """(baseline, candidate) rows matched by strategy x model; one row on each side is paired whatever their
    names. ``strict``: a baseline row with no candidate row is an error that names it; else it is left out."""
    if len(baseline) == 1 and len(candidate) == 1:
        return [(baseline[0], candidate[0])]
    by_name = {r.name: r for r in candidate}
    missing = [b.name for b in baseline if b.name not in by_name]
    if missing and strict:
        raise TaskfitError(f"no candidate row for the baseline's {', '.join(missing)} (candidate rows: "
                           f"{', '.join(by_name) or 'none'})")
    return [(b, by_name[b.name]) for b in baseline if b.name in by_name]
