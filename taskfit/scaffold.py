"""A first task file from a data file: its fields, the output's label set, a metric and a default study
suited to the data, written with comments and checked like any task file."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.errors import TaskfitError

OUTPUT_NAMES = ("label", "answer", "output", "target", "intent", "category", "class", "y")
MAX_LABELS = 200  # more distinct outputs than this is free text, not a label set
FEW_LABELS = 10  # up to here demos are balanced per label; beyond, the nearest train rows (kNN) are shown
TUNE_CLASSIFY_ROWS = 200  # train rows from which a fine-tuned classifier row is proposed
TUNE_SFT_ROWS = 1000  # train rows from which a fine-tuned generator row is proposed


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL or CSV file; errors name the file and line."""
    if not path.is_file():
        raise TaskfitError(f"{path}: no such file")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TaskfitError(f"malformed JSON ({e.msg})", file=str(path), line=n) from None
    else:
        raise TaskfitError(f"{path}: expected a .jsonl or .csv file")
    if not rows:
        raise TaskfitError(f"{path}: no rows")
    return rows


@dataclass
class Goals:
    """What the user wants from the task; written into the task file as comments that explain the study."""

    accuracy_target: float | None = None
    queries_per_day: int | None = None
    latency_ms: int | None = None
    budget_per_month: float | None = None
    data_may_leave: bool = False


@dataclass
class Proposal:
    data_file: Path
    rows: list[dict[str, Any]]
    inputs: list[str]
    output: str
    labels: list[str] | None
    metric: str

    @property
    def fields(self) -> list[str]:
        return list(self.rows[0])


def _is_number(v: Any) -> bool:
    try:
        float(str(v).replace(",", "").strip())
        return True
    except ValueError:
        return False


def detect_labels(values: list[str]) -> list[str] | None:
    """The label set when the outputs are few distinct short strings, repeated; else None (free text)."""
    distinct = sorted(set(values))
    short = all(len(v.split()) <= 4 for v in distinct)
    if short and len(distinct) <= MAX_LABELS and len(distinct) <= max(2, len(values) // 3):
        return distinct
    return None


def propose(path: Path, output: str | None = None, inputs: list[str] | None = None) -> Proposal:
    rows = read_rows(path)
    fields = list(rows[0])
    output = output or next((f for f in OUTPUT_NAMES if f in fields), fields[-1])
    for name in [output, *(inputs or [])]:
        if name not in fields:
            raise TaskfitError(f"{path}: no field {name!r} (fields: {', '.join(fields)})")
    inputs = inputs or [f for f in fields if f not in (output, "id")]
    values = [str(r.get(output, "")) for r in rows]
    if all(_is_number(v) for v in values) and detect_labels(values) is None:
        labels, metric = None, "numeric"
    else:
        labels = detect_labels(values)
        metric = "accuracy" if labels else "token_f1"
    return Proposal(path, rows, inputs, output, labels, metric)


def task_yaml(p: Proposal, goals: Goals, task_dir: Path, name: str) -> str:
    """The task file's text: the data layout, fields, metric and a default study, with comments."""
    import os

    def rel(path: Path) -> str:
        return json.dumps(os.path.relpath(path.resolve(), task_dir.resolve()))

    n = len(p.rows)
    test_file = sibling_test_file(p.data_file)
    n_train = n if test_file else int(n * 0.8)
    lines = [f"# Written by `taskfit init` from {p.data_file.name} ({n} rows); edit freely, then `taskfit validate`.",
             f"name: {json.dumps(name)}",
             "data:"]
    if test_file:
        lines += [f"  train: {rel(p.data_file)}   # demos and fine-tuning data",
                  f"  test: {rel(test_file)}   # found next to the train file: the study is scored on it"]
    else:
        lines += [f"  file: {rel(p.data_file)}",
                  "  split: {train: 0.8, test: 0.2}   # shuffled with `seed`; train rows are demos and fine-tuning data"]
    if test_file and p.labels and sorted_by_label(test_file, p.output):
        lines.append("  shuffle: true   # the files are sorted by label: shuffle them so the first rows are a fair sample")
    lines += ["  seed: 0",
             f"inputs: {json.dumps(p.inputs)}",
             f"output: {json.dumps(p.output)}"]
    if p.labels:
        lines.append(f"labels: {json.dumps(p.labels)}   # {len(p.labels)} labels: answers are scored, never parsed")
    lines.append(f"metrics: [{p.metric}]")
    if not p.labels:
        lines.append("max_tokens: 64   # reply length limit")
    lines += ["prompt:", "  instruction: " + json.dumps(
        f"Given the {', '.join(p.inputs)}, give the {p.output}" + (" (one of the labels)." if p.labels else "."))]
    strategies = ["  - zero_shot   # the baseline every other row must beat"]
    if p.labels and len(p.labels) > FEW_LABELS:
        strategies.append("  - {name: few_shot, k: 8, selection: knn}   # many labels: show the most similar train rows")
    elif p.labels:
        k = min(8, 2 * len(p.labels))
        strategies.append(f"  - {{name: few_shot, k: {k}, selection: balanced}}   # every label shown")
    else:
        strategies.append("  - {name: few_shot, k: 3}")
        if p.metric == "numeric":
            strategies.append("  - {name: zero_shot_cot, max_tokens: 192}   # numbers: reason before answering")
    lines += ["strategies:", *strategies]
    lines += ["models:", "  - bundled   # SmolLM2-135M on this machine" +
              ("" if goals.data_may_leave else "; the data may not leave it, so no hosted model")]
    if goals.data_may_leave:
        lines.append("  # a hosted model may be added: {backend: openai, base_url: ..., model: ..., price_in_per_1m: ...}")
    if p.labels and n_train >= TUNE_CLASSIFY_ROWS:
        lines += ["tuning:   # enough train rows for a fine-tuned classifier to compete",
                  "  - {name: minilm+lora-head, method: lora, objective: classify, model: minilm, epochs: 3}"]
    elif not p.labels and n_train >= TUNE_SFT_ROWS:
        lines += ["tuning:   # enough train rows to fine-tune the small model on the answers",
                  "  - {name: smollm2+lora-sft, method: lora, objective: sft, model: bundled, train_limit: 1000}"]
    costs = []
    if goals.queries_per_day is not None:
        costs.append(f"  volume: {goals.queries_per_day * 365}/year   # {goals.queries_per_day:,} queries a day for a "
                     "year: the recommendation is the cheapest row at this volume")
    if goals.latency_ms is not None:
        costs.append(f"  latency_p50_ms: {goals.latency_ms}   # rows slower than this are not recommended")
    if costs:
        lines += ["costs:", "  # price_per_hour: 0.10   # $ per hour of the serving machine (default: costs in machine-hours)",
                  *costs]
    lines += ["split: test", "limit: 200   # the first 200 test rows keep a study short; --limit overrides"]
    goal_lines = [f"#   accuracy target: {goals.accuracy_target:g}" if goals.accuracy_target is not None else "",
                  f"#   queries per day: {goals.queries_per_day:,}" if goals.queries_per_day is not None else "",
                  f"#   latency limit: {goals.latency_ms} ms" if goals.latency_ms is not None else "",
                  f"#   budget: ${goals.budget_per_month:g} a month" if goals.budget_per_month is not None else "",
                  f"#   data may leave this machine: {'yes' if goals.data_may_leave else 'no'}"]
    lines += ["# Goals, as answered to `taskfit init` (for whoever reads the leaderboard):", *[g for g in goal_lines if g]]
    return "\n".join(lines) + "\n"


def sibling_test_file(data_file: Path) -> Path | None:
    """``test.jsonl`` (or ``.csv``) next to a file named ``train.*``, if there is one: a held-out split the
    data's publisher made, better than a random cut of the train rows."""
    if data_file.stem.lower() != "train":
        return None
    test = data_file.with_name("test" + data_file.suffix)
    return test if test.is_file() else None


def sorted_by_label(path: Path, output: str) -> bool:
    """Whether the file's rows are grouped by label (few changes of label from one row to the next), so its
    first rows would hold only a few labels."""
    labels = [str(r.get(output)) for r in read_rows(path)]
    runs = 1 + sum(a != b for a, b in zip(labels, labels[1:]))
    return len(set(labels)) > 2 and runs <= 2 * len(set(labels))


def task_name(data_file: Path) -> str:
    """A task name from the data file: its folder's name when the file is only a split (train.jsonl, data.csv)."""
    import re

    stem = data_file.stem
    if stem.lower() in ("train", "test", "dev", "data", "rows", "all") and data_file.resolve().parent.name:
        stem = data_file.resolve().parent.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "task"
    return name[:100]


def write_task(p: Proposal, goals: Goals, out: Path, name: str | None = None) -> Path:
    """Write the task file to ``out`` and check it (data, fields, templates) as `taskfit validate` does."""
    from taskfit.study import prepare

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(task_yaml(p, goals, out.parent, name or task_name(p.data_file)))
    prepare(out)
    return out
