"""Training rows for each objective, rendered exactly as the model will see them at evaluation time.

- sft: the prompt of the task's strategy (system, user turn, the reply's opening words) through the model's
  chat template, then the answer and the end-of-turn token; the loss covers the answer and that token only.
- classify: the task's input (its ``input_template``) and the label index.
- pretrain: raw text files, concatenated with end-of-text tokens and cut into blocks of ``max_length``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.answering import answer_text
from taskfit.backends.hf import prompt_text
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.prompts import render_input

IGNORE = -100  # label value the loss skips (prompt and padding positions)


@dataclass
class TrainRow:
    input_ids: list[int]
    labels: list[int] | int  # per-token targets (causal objectives) or the class index (classify)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TrainData:
    """A run's training rows as the model will see them."""

    tokenizer: Any
    chat_template: bool  # prompts go through the tokenizer's chat template
    rows: list[TrainRow]
    sample: str  # one rendered row (or classifier input), stored with the model
    data_hash: str  # fingerprint of what the rows were made from


def train_hash(examples: list[Example]) -> str:
    """Fingerprint of the training rows (ids, fields and targets), stored with every tuned model."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.fields, ex.target], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def sft_target(ex: Example, response_prefix: str, labels: list[str] | None) -> str:
    """The reply continuation a model learns: for label tasks the label as label scoring reads it."""
    if labels:
        lead = " " if response_prefix and not response_prefix[-1:].isspace() else ""
        return lead + ex.target
    return answer_text(ex.target, response_prefix)[len(response_prefix):]


def sft_rows(examples: list[Example], prompt_fn, tokenizer, *, chat_template: bool, response_prefix: str,
             labels: list[str] | None, max_length: int) -> tuple[list[TrainRow], str]:
    """Token rows with loss on the answer and end-of-turn only; also returns one rendered row to store."""
    eos = tokenizer.eos_token or ""
    rows, sample = [], ""
    for ex in examples:
        prompt = prompt_text(tokenizer, prompt_fn(ex), chat_template)
        answer = sft_target(ex, response_prefix, labels) + eos
        p_ids = tokenizer(prompt, add_special_tokens=not chat_template)["input_ids"]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(a_ids) >= max_length:
            raise TaskfitError(f"row {ex.id}: the answer alone is {len(a_ids)} tokens, over max_length={max_length}",
                               field="tuning[].max_length")
        p_ids = p_ids[-(max_length - len(a_ids)):]  # keep the end of a long prompt: it holds the question
        rows.append(TrainRow(p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids))
        sample = sample or prompt + answer
    return rows, sample


def classify_rows(examples: list[Example], parts, tokenizer, labels: list[str], max_length: int) -> list[TrainRow]:
    index = {lab: i for i, lab in enumerate(labels)}
    rows = []
    for ex in examples:
        if ex.target not in index:
            raise TaskfitError(f"row {ex.id}: label {ex.target!r} is not one of the task's labels {labels}",
                               field="output")
        ids = tokenizer(render_input(parts, ex), truncation=True, max_length=max_length)["input_ids"]
        rows.append(TrainRow(ids, index[ex.target]))
    return rows


def classify_text(parts, ex: Example) -> str:
    """What a classifier reads: the rendered input, nothing else."""
    return render_input(parts, ex)


def pretrain_rows(folder: Path, tokenizer, max_length: int) -> tuple[list[TrainRow], str]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        raise TaskfitError(f"{folder}: no .txt or .md files to pre-train on", field="tuning[].text_dir")
    ids: list[int] = []
    h = hashlib.sha256()
    for f in files:
        text = f.read_text(encoding="utf-8")
        h.update(f.name.encode() + text.encode())
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rows = [TrainRow(ids[i:i + max_length], ids[i:i + max_length]) for i in range(0, len(ids) - 1, max_length)]
    return [r for r in rows if len(r) > 1], h.hexdigest()[:16]
