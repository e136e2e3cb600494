"""Human review: correct/incorrect labels and pairwise choices, the human score, preference pairs, and the
active-learning queue that puts the answers a label would teach most about first.

A label judges an *answer to an example*, not a run: it is keyed by (task, example id, normalised answer), so
every run that gave the same answer to the same example shares it. Reviews are append-only; the latest
verdict on a key wins, and the full history stays for audit.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.parsing import answer_key
from taskfit.stats import wilson_interval
from taskfit.store import RunRecord, Store
from taskfit.types import PredictionRow

LABELS = ("correct", "incorrect")
CHOICES = ("a", "b", "tie")


def label_key(answer: str | None) -> str:
    """The label key of an answer: normalised, so "Positive." and "positive" share a label."""
    return answer_key(answer) if answer else ""


@dataclass(frozen=True)
class Label:
    example_id: str
    answer: str | None
    verdict: str  # correct | incorrect
    comment: str
    run_id: str  # the run the answer was reviewed in (other runs with the same answer share the label)
    created: float


def _prediction(store: Store, run: RunRecord, example_id: str) -> PredictionRow:
    match = [p for p in store.predictions(run.id, with_trace=False) if p.example_id == example_id]
    if not match:
        raise TaskfitError(f"run {run.id} has no example {example_id!r}")
    return match[0]


def add_label(store: Store, run: RunRecord, example_id: str, verdict: str, comment: str = "") -> Label:
    """Record a reviewer's verdict on the answer ``run`` gave for ``example_id``."""
    if verdict not in LABELS:
        raise TaskfitError(f"verdict must be one of {', '.join(LABELS)}, got {verdict!r}", field="verdict")
    p = _prediction(store, run, example_id)
    now = time.time()
    with store.eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reviews (kind, task_name, example_id, run_id, answer, answer_key, verdict, "
                "comment, created) VALUES ('label', :t, :e, :r, :a, :k, :v, :c, :now)"
            ),
            {
                "t": run.task_name,
                "e": example_id,
                "r": run.id,
                "a": p.answer,
                "k": label_key(p.answer),
                "v": verdict,
                "c": comment.strip(),
                "now": now,
            },
        )
    return Label(example_id, p.answer, verdict, comment.strip(), run.id, now)


def add_choice(
    store: Store, run_a: RunRecord, run_b: RunRecord, example_id: str, choice: str, comment: str = ""
) -> None:
    """Record which of two runs answered ``example_id`` better: ``a``, ``b`` or ``tie``."""
    if choice not in CHOICES:
        raise TaskfitError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", field="choice")
    if run_a.task_name != run_b.task_name:
        raise TaskfitError(
            f"runs {run_a.id} and {run_b.id} are on different tasks "
            f"({run_a.task_name!r}, {run_b.task_name!r})"
        )
    pa, pb = _prediction(store, run_a, example_id), _prediction(store, run_b, example_id)
    with store.eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reviews (kind, task_name, example_id, run_id, answer, answer_key, "
                "other_run_id, other_answer, verdict, comment, created) VALUES ('pair', :t, :e, :ra, "
                ":a, :k, :rb, :b, :v, :c, :now)"
            ),
            {
                "t": run_a.task_name,
                "e": example_id,
                "ra": run_a.id,
                "a": pa.answer,
                "k": label_key(pa.answer),
                "rb": run_b.id,
                "b": pb.answer,
                "v": choice,
                "c": comment.strip(),
                "now": time.time(),
            },
        )


def labels(eng: Engine, task_name: str | None = None) -> dict[tuple[str, str], Label]:
    """The latest label per (example id, answer key), for one task or (None) every task."""
    sql = (
        "SELECT * FROM reviews WHERE kind = 'label'"
        + (" AND task_name = :t" if task_name else "")
        + " ORDER BY id"
    )
    with eng.connect() as conn:
        rows = conn.execute(text(sql), {"t": task_name}).mappings().all()
    out: dict[tuple[str, str], Label] = {}
    for r in rows:  # in insertion order, so a later verdict replaces an earlier one
        out[(r["example_id"], r["answer_key"])] = Label(
            r["example_id"], r["answer"], r["verdict"], r["comment"], r["run_id"], r["created"]
        )
    return out


def label_history(eng: Engine, task_name: str) -> list[dict[str, Any]]:
    """Every label event of a task, oldest first (a changed verdict appears twice)."""
    with eng.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT example_id, answer_key, verdict, created FROM reviews "
                "WHERE kind = 'label' AND task_name = :t ORDER BY id"
            ),
            {"t": task_name},
        )
        return [dict(r) for r in rows.mappings()]


def choices(eng: Engine, task_name: str | None = None) -> list[dict[str, Any]]:
    """The latest pairwise choice per (example, run A, run B), oldest first."""
    sql = (
        "SELECT * FROM reviews WHERE kind = 'pair'"
        + (" AND task_name = :t" if task_name else "")
        + " ORDER BY id"
    )
    with eng.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(sql), {"t": task_name}).mappings()]
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        latest[(r["example_id"], r["run_id"], r["other_run_id"])] = r
    return list(latest.values())


def verdict_for(lab: dict[tuple[str, str], Label], example_id: str, answer: str | None) -> str | None:
    """The human verdict on this answer to this example, if any."""
    found = lab.get((example_id, label_key(answer)))
    return found.verdict if found else None


@dataclass(frozen=True)
class HumanScore:
    """Accuracy by human labels over a run's labelled answers, with a Wilson 95% interval."""

    labelled: int
    correct: int
    total: int  # predictions in the run

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.labelled)


def human_score(predictions: list[PredictionRow], lab: dict[tuple[str, str], Label]) -> HumanScore:
    """The ``human`` score of a run's predictions: correct / labelled, where a label exists."""
    verdicts = [verdict_for(lab, p.example_id, p.answer) for p in predictions]
    seen = [v for v in verdicts if v]
    return HumanScore(labelled=len(seen), correct=sum(v == "correct" for v in seen), total=len(predictions))


def ci_history(predictions: list[PredictionRow], history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The human accuracy of a run and its 95% CI after each label that touched it, in the order labels came.

    Returns one point per label event: ``n`` (answers labelled so far), ``accuracy``, ``ci_low``, ``ci_high``.
    """
    mine = {(p.example_id, label_key(p.answer)) for p in predictions}
    current: dict[tuple[str, str], str] = {}
    out = []
    for h in history:
        key = (h["example_id"], h["answer_key"])
        if key not in mine:
            continue
        current[key] = h["verdict"]
        n = len(current)
        k = sum(v == "correct" for v in current.values())
        lo, hi = wilson_interval(k, n)
        out.append({"n": n, "accuracy": k / n, "ci_low": lo, "ci_high": hi})
    return out


# -- preference pairs --------------------------------------------------------------------------------


def prompt_text(run: RunRecord, inputs: dict[str, Any]) -> str:
    """The task's plain prompt for an example (system, instruction, input, output format), rebuilt from the
    configuration stored with the run, so preference pairs from different strategies share one prompt."""
    from taskfit.prompts import prompt_parts, render, user_turn
    from taskfit.taskfile import Task, TaskConfig

    task = Task(TaskConfig.model_validate(run.config["task"]), Path(run.task_path), "")
    parts = prompt_parts(task)
    ex = Example(id="", fields=inputs, target="")
    try:
        turn = user_turn(parts, ex)
        system = render(parts.system, inputs) if parts.system else ""
    except TaskfitError:  # a template reading a non-input field: the stored inputs are all there is
        return "\n".join(f"{k}: {v}" for k, v in inputs.items())
    return f"{system}\n\n{turn}" if system else turn


def preference_pairs(
    store: Store, task_name: str | None = None, from_labels: bool = True
) -> list[dict[str, Any]]:
    """(prompt, chosen, rejected) records from pairwise choices (ties skipped) and, with ``from_labels``, from
    every (correct, incorrect) pair of differently labelled answers to the same example."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    runs: dict[str, RunRecord | None] = {}
    inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def run_of(run_id: str) -> RunRecord | None:
        if run_id not in runs:
            runs[run_id] = store.get(run_id)
        return runs[run_id]

    def example_inputs(run: RunRecord, example_id: str) -> dict[str, Any]:
        if (run.id, example_id) not in inputs:
            for p in store.predictions(run.id, with_trace=False):
                inputs[(run.id, p.example_id)] = p.inputs
        return inputs.get((run.id, example_id), {})

    def emit(run: RunRecord, example_id: str, chosen: str, rejected: str, **extra: Any) -> None:
        prompt = prompt_text(run, example_inputs(run, example_id))
        if (prompt, chosen, rejected) in seen or label_key(chosen) == label_key(rejected):
            return
        seen.add((prompt, chosen, rejected))
        out.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "task": run.task_name,
                "example_id": example_id,
                **extra,
            }
        )

    for c in choices(store.eng, task_name):
        if c["verdict"] == "tie" or c["answer"] is None or c["other_answer"] is None:
            continue
        run = run_of(c["run_id"])
        if run is None:
            continue
        win, lose = ("answer", "other_answer") if c["verdict"] == "a" else ("other_answer", "answer")
        win_run, lose_run = (
            (c["run_id"], c["other_run_id"]) if c["verdict"] == "a" else (c["other_run_id"], c["run_id"])
        )
        emit(
            run,
            c["example_id"],
            c[win],
            c[lose],
            source="pairwise",
            chosen_run=win_run,
            rejected_run=lose_run,
        )
    if from_labels:
        by_example: dict[tuple[str, str], dict[str, list[Label]]] = {}
        sql = "SELECT DISTINCT task_name FROM reviews WHERE kind = 'label'" + (
            " AND task_name = :t" if task_name else ""
        )
        with store.eng.connect() as conn:
            tasks = [r[0] for r in conn.execute(text(sql), {"t": task_name})]
        for t in tasks:
            for (example_id, _), lab in labels(store.eng, t).items():
                if lab.answer is not None:
                    by_example.setdefault((t, example_id), {}).setdefault(lab.verdict, []).append(lab)
        for (_, example_id), groups in by_example.items():
            for good in groups.get("correct", []):
                for bad in groups.get("incorrect", []):
                    run = run_of(good.run_id)
                    if run is not None and good.answer is not None and bad.answer is not None:
                        emit(
                            run,
                            example_id,
                            good.answer,
                            bad.answer,
                            source="labels",
                            chosen_run=good.run_id,
                            rejected_run=bad.run_id,
                        )
    return out


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records one JSON object per line; returns how many."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


# -- active learning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the runs of a study say about one example: the input to the queue's ordering."""

    example_id: str
    answers: dict[str, str | None]  # run id -> answer
    scores: dict[str, float] = field(default_factory=dict)  # run id -> metric score in [0, 1]
    confidences: dict[str, float] = field(
        default_factory=dict
    )  # run id -> top label prob minus the runner-up's
    judge: dict[str, float] = field(default_factory=dict)  # run id -> judge score in [0, 1]
    labelled: bool = False  # every distinct answer already has a human label


@dataclass(frozen=True)
class QueueItem:
    example_id: str
    priority: float
    disagreement: float  # vote entropy of the runs' answers, 0 (all agree) to 1 (all differ)
    score_spread: float  # max - min metric score across runs: the runs disagree about being right
    judge_uncertainty: float  # 1 when the judge's score is 0.5, 0 when it is 0 or 1 (mean over runs)
    low_confidence: float  # 1 - the model's label margin (mean over runs that scored labels)
    labelled: bool


def vote_entropy(answers: Iterable[str | None]) -> float:
    """Entropy of the answers' distribution divided by its maximum (log of the number of voters)."""
    keys = [label_key(a) for a in answers]
    if len(keys) < 2:
        return 0.0
    counts = Counter(keys).values()
    h = -sum(c / len(keys) * math.log(c / len(keys)) for c in counts)
    return max(0.0, h / math.log(len(keys)))  # max: one class gives -0.0


def label_margin(label_logprobs: dict[str, float]) -> float | None:
    """Softmax probability of the top label minus the runner-up's; None with fewer than two labels."""
    if len(label_logprobs) < 2:
        return None
    m = max(label_logprobs.values())
    ps = sorted((math.exp(v - m) for v in label_logprobs.values()), reverse=True)
    z = sum(ps)
    return (ps[0] - ps[1]) / z


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def informativeness(ev: Evidence, weights: dict[str, float] | None = None) -> QueueItem:
    """Score how much a human label on this example would teach: the sum of the weighted signals, each in
    [0, 1] (query by committee across strategies, judge uncertainty, least-confident label margin)."""
    w = {
        "disagreement": 1.0,
        "score_spread": 1.0,
        "judge_uncertainty": 1.0,
        "low_confidence": 1.0,
        **(weights or {}),
    }
    parts = {
        "disagreement": vote_entropy(ev.answers.values()),
        "score_spread": (max(ev.scores.values()) - min(ev.scores.values())) if len(ev.scores) > 1 else 0.0,
        "judge_uncertainty": _mean(1 - abs(2 * s - 1) for s in ev.judge.values()),
        "low_confidence": _mean(1 - c for c in ev.confidences.values()),
    }
    return QueueItem(
        example_id=ev.example_id,
        priority=sum(w[k] * v for k, v in parts.items()),
        labelled=ev.labelled,
        **parts,
    )


def order_queue(pool: Iterable[Evidence], weights: dict[str, float] | None = None) -> list[QueueItem]:
    """Unlabelled examples first, most informative first; ties keep the pool's order."""
    items = [informativeness(ev, weights) for ev in pool]
    return sorted(items, key=lambda it: (it.labelled, -it.priority))  # sorted is stable


def gather_evidence(
    run_predictions: dict[str, list[PredictionRow]], lab: dict[tuple[str, str], Label]
) -> list[Evidence]:
    """One Evidence per example of the runs (run id -> stored predictions), in the first run's order."""
    by_example: dict[str, dict[str, PredictionRow]] = {}
    for run_id, preds in run_predictions.items():
        for p in preds:
            by_example.setdefault(p.example_id, {})[run_id] = p
    out = []
    for example_id, per_run in by_example.items():
        confidences = {}
        for run_id, p in per_run.items():
            lps = ((p.trace or {}).get("details") or {}).get("label_logprobs")
            margin = label_margin(lps) if lps else None
            if margin is not None:
                confidences[run_id] = margin
        out.append(
            Evidence(
                example_id=example_id,
                answers={r: p.answer for r, p in per_run.items()},
                scores={r: float(p.score) for r, p in per_run.items()},
                confidences=confidences,
                judge={
                    r: float(p.metrics["judge"])
                    for r, p in per_run.items()
                    if "judge" in (p.metrics or {})
                },
                labelled=all((example_id, label_key(p.answer)) in lab for p in per_run.values()),
            )
        )
    return out
