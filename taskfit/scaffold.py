"""A first task file from a data file: its fields, the output's label set, a metric and a default study
suited to the data, written with comments and checked like any task file."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import TaskfitError

OUTPUT_NAMES = ("label", "answer", "output", "target", "intent", "category", "class", "y")
MAX_LABELS = 200  # more distinct outputs than this is free text, not a label set
FEW_LABELS = 10  # up to here demos are balanced per label; beyond, the nearest train rows (kNN) are shown
TUNE_CLASSIFY_ROWS = 200  # train rows from which a fine-tuned classifier row is proposed
TUNE_SFT_ROWS = 1000  # train rows from which a fine-tuned generator row is proposed
CALIBRATE_LABELS = 20  # label sets up to this size are scored with contextual calibration
TUNE_MINUTES = 10  # a proposed fine-tuned row trains on as many rows as take about this much CPU time
ENCODER_MAX_LENGTH = 512  # MiniLM's position limit
SFT_MAX_LENGTH = 1024  # prompt + answer for the bundled 135M model
# CPU seconds of training per token (as estimated here) and epoch, one thread (OMP_NUM_THREADS=1), measured with
# `taskfit tune`'s train_cpu_s: MiniLM with every weight trained, 61 s for 3 epochs of 200 grading rows
# (21,500 tokens an epoch; 258 s of wall time on a machine shared with other jobs)
MINILM_S_PER_TOKEN = 0.00095
# SmolLM2-135M with LoRA, sft: 36 s for one epoch of 40 grading rows (5,300 tokens with the prompt around them)
SMOLLM_S_PER_TOKEN = 0.007
SFT_PROMPT_TOKENS = 30  # chat template and output format around the instruction and the input


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
    left_out: dict[str, str] = field(default_factory=dict)  # field -> why it is not an input
    kept: dict[str, str] = field(default_factory=dict)  # input named by the user -> why it would have been left out
    describe: str = ""  # the user's sentence saying what the task is
    instruction: str = ""  # the prompt's instruction (default: composed from the pieces)
    instruction_note: str = ""  # where the instruction came from, when not composed here
    interview: list[tuple[str, str]] = field(default_factory=list)  # the model's questions and the answers

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


# question_id, sampleId, uuid, qid: names that say the field identifies a row or a group of rows
_ID_NAME = re.compile(r"(^|[_\-\s.])(id|ids|uuid|guid)$|^[a-z]?id$|^uuid$")
_ID_CAMEL = re.compile(r"[a-z0-9](Id|ID|Uuid|UUID)$")


def _structured(v: Any) -> str | None:
    """'list' or 'object' when a value is one (a JSON list, or a CSV cell holding one); else None."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            v = json.loads(v)
        except ValueError:
            return None
    return "list" if isinstance(v, list) else "object" if isinstance(v, dict) else None


def leave_out_reason(name: str, values: list[Any]) -> str | None:
    """Why a field should not be shown to the model by default (an identifier, a list or an object), or None
    when it is a plausible input. A field with one value in every row stays: a prompt may need it as context."""
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return "is empty in every row"
    kinds = {_structured(v) for v in present} - {None}
    if kinds:
        kind = "a list" if "list" in kinds else "an object"
        return f"holds {kind} in each row, not text (--input {name} keeps it)"
    distinct = len({str(v) for v in present})
    share = f"{distinct / len(present):.0%} unique"
    if _ID_NAME.search(name.lower()) or _ID_CAMEL.search(name):
        return f"looks like an identifier (its name; {distinct:,} distinct values, {share})"
    # codes such as EM.45b.299.1 or a1b2-c3: one token mixing digits with letters or separators, near-unique
    codes = all(isinstance(v, str) and not any(c.isspace() for c in v.strip()) and any(c.isdigit() for c in v)
                and not _is_number(v) for v in present)
    if codes and distinct >= 0.9 * len(present):
        return f"looks like an identifier ({share} codes)"
    if all(isinstance(v, int) for v in present) and distinct == len(present) == max(present) - min(present) + 1:
        return "looks like a row number (consecutive unique integers)"
    return None


def propose(path: Path, output: str | None = None, inputs: list[str] | None = None, describe: str = "") -> Proposal:
    """The fields, labels and metric for the rows in ``path``; ``inputs`` given are taken as they are,
    otherwise every field but the output is an input unless it looks like an identifier, a list or an object."""
    rows = read_rows(path)
    fields = list(rows[0])
    output = output or next((f for f in OUTPUT_NAMES if f in fields), fields[-1])
    for name in [output, *(inputs or [])]:
        if name not in fields:
            raise TaskfitError(f"{path}: no field {name!r} (fields: {', '.join(fields)})")
    reasons = {f: why for f in fields if f != output and (why := leave_out_reason(f, [r.get(f) for r in rows]))}
    if not inputs:
        inputs = [f for f in fields if f != output and f not in reasons]
        if not inputs:
            why = "; ".join(f"{f}: {r}" for f, r in reasons.items())
            raise TaskfitError(f"{path}: no field looks like an input ({why}); name one with --input FIELD")
    left_out = {f: why for f, why in reasons.items() if f not in inputs}
    kept = {f: why for f, why in reasons.items() if f in inputs}
    values = [str(r.get(output, "")) for r in rows]
    if all(_is_number(v) for v in values) and detect_labels(values) is None:
        labels, metric = None, "numeric"
    else:
        labels = detect_labels(values)
        metric = "accuracy" if labels else "token_f1"
    p = Proposal(path, rows, inputs, output, labels, metric, left_out, kept, describe.strip())
    p.instruction = compose_instruction(p)
    return p


def readable(name: str) -> str:
    """A field name as words: reference_answer, referenceAnswer -> 'reference answer'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def heading(name: str) -> str:
    """A field name as a line heading: reference_answer -> 'Reference answer'."""
    words = readable(name)
    return words[:1].upper() + words[1:]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_NEGATED = re.compile(r"^(?:not[ _-]?|non[ _-]?|in|un|im|ir|il|dis)(.+)$")
GENERIC_OUTPUTS = ("label", "labels", "class", "y", "target", "output", "category")


def _affirmative(labels: list[str]) -> str | None:
    """'correct' for [correct, incorrect] (one label is the other negated); else None."""
    if len(labels) == 2:
        for a, b in (labels, labels[::-1]):
            m = _NEGATED.match(b.lower())
            if m and m.group(1) == a.lower():
                return a
    return None


def _given(names: list[str]) -> str:
    """', given the question and the reference answer' (empty without context fields)."""
    return ", given " + _and([f"the {n}" for n in names]) if names else ""


def compose_instruction(p: Proposal) -> str:
    """The instruction in words, from the user's description when there is one, else from the field names
    and the labels; no model is asked."""
    if p.describe:
        text = p.describe[:1].upper() + p.describe[1:]
        return text if text[-1:] in ".?!" else text + "."
    names = [readable(f) for f in p.inputs]
    # what is judged is the last field (the student answer after the question); what is answered, the question
    judged = names[-1]
    asked = "question" if "question" in names else judged
    if p.labels and (yes := _affirmative(p.labels)) is not None:
        return f"Decide whether the {judged} is {readable(yes)}{_given(names[:-1])}."
    context = [n for n in names if n != asked]
    if p.labels and {lab.lower() for lab in p.labels} in ({"yes", "no"}, {"true", "false"}):
        words = " or ".join(sorted(p.labels, key=lambda lab: lab.lower() not in ("yes", "true")))
        return f"Answer the {asked} with {words}{_given(context)}."
    if p.labels:
        what = "label that fits" if p.output.lower() in GENERIC_OUTPUTS else f"{readable(p.output)} of"
        return f"Choose the {what} the {asked}{_given(context)}."
    if p.metric == "numeric":
        return f"Answer the {asked} with a number{_given(context)}."
    return f"Give the {readable(p.output)} for the {asked}{_given(context)}."


def input_template(inputs: list[str]) -> str | None:
    """One labelled line per input (`Reference answer: {{ reference_answer }}`); None when a field name is not
    a template variable (the default template is then used)."""
    if not all(f.isidentifier() for f in inputs):
        return None
    return "\n".join(f"{heading(f)}: {{{{ {f} }}}}" for f in inputs)


def response_prefix(output: str) -> str:
    """The reply's opening words for label scoring: the output's name, or 'Answer:' for a generic one."""
    return "Answer:" if output.lower() in GENERIC_OUTPUTS else f"{heading(output)}:"


def input_tokens(p: Proposal) -> list[int]:
    """Tokens of each row's shown input, sorted, estimated at 4 characters a token (no tokenizer is loaded)."""
    template = input_template(p.inputs) or ""
    return sorted(-(-(len(template) + sum(len(str(r.get(f, ""))) for f in p.inputs)) // 4) for r in p.rows)


@dataclass
class TuningPlan:
    """The fine-tuned row init proposes, with the rows it trains on and what that is expected to cost."""

    name: str
    entry: dict[str, Any]  # the task file's `tuning:` entry
    rows: int  # train rows it trains on
    of_rows: int  # train rows there are
    max_length: int
    p95_tokens: int  # estimated tokens of the 95th-percentile input
    longer: float  # share of inputs longer than max_length (cut)
    minutes: float  # estimated CPU time of training on `rows`
    minutes_all: float  # ... for every train row

    def note(self) -> str:
        """One line for the terminal before anyone starts a long training."""
        rows = f"{self.rows:,} train rows" if self.rows == self.of_rows else f"{self.rows:,} of {self.of_rows:,} train rows"
        line = f"tuning {self.name}: about {_minutes(self.minutes)} of CPU time to train on {rows}"
        if self.rows < self.of_rows:
            line += f" (all rows: about {_minutes(self.minutes_all)}; raise `train_limit` to use them)"
        return line


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m >= 1 else "under a minute"


def tuning_plan(p: Proposal, n_train: int) -> TuningPlan | None:
    """A classifier for a label set, an sft row for free text, when the train rows are enough; capped to about
    TUNE_MINUTES of estimated CPU training."""
    if p.labels and n_train >= TUNE_CLASSIFY_ROWS:
        name, limit, per_token, epochs, extra = "minilm+full", ENCODER_MAX_LENGTH, MINILM_S_PER_TOKEN, 3, 0
        entry: dict[str, Any] = {"name": name, "method": "full", "objective": "classify", "model": "minilm",
                                 "epochs": epochs}
    elif not p.labels and n_train >= TUNE_SFT_ROWS:
        name, limit, per_token, epochs = "smollm2+lora-sft", SFT_MAX_LENGTH, SMOLLM_S_PER_TOKEN, 1
        extra = -(-len(p.instruction) // 4) + SFT_PROMPT_TOKENS  # the sft row is trained on the whole prompt
        entry = {"name": name, "method": "lora", "objective": "sft", "model": "bundled"}
    else:
        return None
    tokens = [t + extra for t in input_tokens(p)]
    p95 = tokens[min(len(tokens) - 1, int(0.95 * len(tokens)))]
    max_length = max(64, min(limit, -(-(p95 + 16) // 32) * 32))  # + room for special tokens and the answer
    longer = sum(t > max_length for t in tokens) / len(tokens)
    mean = sum(min(t, max_length) for t in tokens) / len(tokens)
    per_row = epochs * mean * per_token / 60  # CPU minutes
    rows = n_train
    if per_row * n_train > TUNE_MINUTES:
        rows = max(TUNE_CLASSIFY_ROWS, int(TUNE_MINUTES / per_row) // 100 * 100)
    entry["max_length"] = max_length
    if rows < n_train:
        entry["train_limit"] = rows
    return TuningPlan(name, entry, rows, n_train, max_length, p95, longer, per_row * rows, per_row * n_train)


def task_yaml(p: Proposal, goals: Goals, task_dir: Path, name: str) -> str:
    """The task file's text: the data layout, fields, metric and a default study, with comments."""
    import os

    def rel(path: Path) -> str:
        return json.dumps(os.path.relpath(path.resolve(), task_dir.resolve()))

    n = len(p.rows)
    test_file = sibling_test_file(p.data_file)
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
    lines += ["  seed: 0"]
    if p.describe:
        lines.append(f"description: {json.dumps(p.describe)}")
    lines += [f"inputs: {json.dumps(p.inputs)}",
              *[f"# {f} left out: {why}" for f, why in p.left_out.items()],
              *[f"# {f} is an input as asked, though it {why}" for f, why in p.kept.items()],
              f"output: {json.dumps(p.output)}"]
    if p.labels:
        lines.append(f"labels: {json.dumps(p.labels)}   # {len(p.labels)} labels: answers are scored, never parsed")
    lines.append(f"metrics: [{p.metric}]")
    if not p.labels:
        lines.append("max_tokens: 64   # reply length limit")
    lines += prompt_lines(p)
    if p.labels and len(p.labels) <= CALIBRATE_LABELS:
        lines.append("calibrate: true   # each label's score on a content-free input ('N/A') is subtracted: "
                     "removes the model's lean towards one label")
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
    if plan := tuning_plan(p, train_rows(p)):
        lines += tuning_lines(plan)
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


def prompt_lines(p: Proposal) -> list[str]:
    """The task file's `prompt:` block: the instruction, a labelled input template, the reply's prefix."""
    how = p.instruction_note or ("from your description" if p.describe else
                                 "from the field names and labels (--describe says it in your words)")
    lines = ["prompt:", *[f"  # asked: {q} answered: {a}" for q, a in p.interview],
             f"  instruction: {json.dumps(p.instruction)}   # {how}"]
    template = input_template(p.inputs)
    if template:
        lines += ["  input_template: |-   # one labelled line per input", *[f"    {t}" for t in template.split("\n")]]
    if p.labels:
        shown = ", ".join(p.labels) if len(p.labels) <= CALIBRATE_LABELS else f"the {len(p.labels)} labels"
        lines += [f"  # after the input the prompt lists the answers ({shown}): `output_format` changes that",
                  f"  response_prefix: {json.dumps(response_prefix(p.output))}   # the reply starts here; each label "
                  "is scored as its continuation"]
    return lines


def tuning_lines(plan: TuningPlan) -> list[str]:
    """The task file's `tuning:` block, its cost and cut inputs said in comments."""
    entry = ", ".join(f"{k}: {v}" for k, v in plan.entry.items())
    cut = f"; {plan.longer:.0%} of inputs are longer and are cut" if plan.longer else ""
    rest = f" (all {plan.of_rows:,}: about {_minutes(plan.minutes_all)})" if plan.rows < plan.of_rows else ""
    return ["tuning:   # enough train rows for a fine-tuned model to compete; trained once, then reused",
            f"  - {{{entry}}}",
            f"    # max_length {plan.max_length}: 95% of inputs are up to about {plan.p95_tokens} tokens "
            f"(at 4 characters a token){cut}",
            f"    # training: about {_minutes(plan.minutes)} of CPU time (one thread) for {plan.rows:,} rows{rest}; "
            "a machine shared with other jobs takes longer, a GPU far less"]


def train_rows(p: Proposal) -> int:
    """Rows of the train split the task file will have: the whole file beside a test file, else 80%."""
    return len(p.rows) if sibling_test_file(p.data_file) else int(len(p.rows) * 0.8)


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
    runs = 1 + sum(a != b for a, b in zip(labels, labels[1:], strict=False))
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
