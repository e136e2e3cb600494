"""The before/after table: what a model answers for the first rows of the task's evaluation split, before
training and after it (the top label of a classification head, or the greedy reply to the training prompt)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from taskfit.backends import GenerateRequest, ScoreRequest
from taskfit.backends.tuned import ClassifierBackend, live_backend
from taskfit.dataset import Example, load_dataset
from taskfit.taskfile import Task

SHOW_N = 6  # examples in the table


def show_examples(task: Task) -> list[Example]:
    """The first few rows of the task's evaluation split."""
    return load_dataset(task).split(task.config.split)[:SHOW_N]


def short(ex: Example) -> str:
    text = " | ".join(str(v) for v in ex.fields.values() if v != ex.target)
    return text if len(text) <= 90 else text[:87] + "..."


def before(examples: list[Example], answers: list[str]) -> list[dict[str, Any]]:
    """The table's rows with the untrained model's answers."""
    return [{"id": ex.id, "input": short(ex), "target": ex.target, "before": out}
            for ex, out in zip(examples, answers, strict=True)]


def add_after(table: list[dict[str, Any]], answers: list[str]) -> None:
    for row, out in zip(table, answers, strict=False):
        row["after"] = out


def top_labels(model: torch.nn.Module, tokenizer, device: torch.device, labels: list[str],
               inputs: list[str]) -> list[str]:
    """The label a classification head ranks first for each rendered input."""
    backend = ClassifierBackend(model, tokenizer, labels, "before-after", device, 8)
    res = backend.score([ScoreRequest(({"role": "user", "content": text},), tuple(labels)) for text in inputs])
    return [labels[max(range(len(labels)), key=r.logprobs.__getitem__)] for r in res]


def greedy_replies(model: torch.nn.Module, tokenizer, device: torch.device, chat_template: bool,
                   prompt: Callable[[Example], Any], examples: list[Example]) -> list[str]:
    """The first line of the model's greedy reply to ``prompt`` for each example."""
    backend = live_backend(model, tokenizer, device, chat_template, "before-after")
    res = backend.generate([GenerateRequest(prompt(ex), max_tokens=12, stop=("\n",)) for ex in examples])
    return [(r.texts[0] if r.texts else "").strip() for r in res]
