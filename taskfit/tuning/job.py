"""What a fine-tuning run is made of before anything loads: the method that trains and its options, the device,
the base model's folder, the learning rate and schedule, and the prompt the model trains on.

``resolve`` is where a task becomes plain inputs: the task's strategy is built here once and its prompt kept
as a function, so the recipe's steps (rows, the before/after table, dpo's sampled pairs) render with it
without consulting the strategy registry again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.prompts import PromptParts, prompt_parts
from taskfit.strategies import StrategyContext, strategies
from taskfit.taskfile import StrategySpec, Task
from taskfit.tuning import distributed
from taskfit.tuning.methods import Method, method
from taskfit.tuning.models import base_folder, resolve_device
from taskfit.tuning.spec import TuneSpec
from taskfit.tuning.train import TrainConfig

Prompt = Callable[[Example], Any]  # an example -> the messages a strategy sends for it


@dataclass
class Job:
    """A run's resolved inputs: nothing loaded, nothing rendered."""

    task: Task
    spec: TuneSpec
    examples: list[Example]  # the train rows (the first ``train_limit``)
    method: Method  # the method that trains: the one asked for, or its substitute where it cannot run
    options: BaseModel  # the method's own keys, validated
    fallback: str | None  # why the substitute trains instead, when it does
    device: torch.device
    lr: float
    folder: Path  # the base model's weights
    strategy_row: StrategySpec  # what the tuned model is evaluated with
    parts: PromptParts
    prompt: Prompt | None  # the strategy's prompt (sft, pretrain); None for a classifier
    config: TrainConfig

    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def labels(self) -> list[str] | None:
        return self.task.config.labels

    @staticmethod
    def strategy_for(task: Task, spec: TuneSpec) -> StrategySpec:
        return strategy_for(task, spec)


def resolve(task: Task, train_examples, spec: TuneSpec) -> Job:
    """The job ``spec`` describes on ``task``: the method (or its substitute), device, learning rate, base folder
    and training prompt; errors name the key at fault."""
    device = distributed.process_device(resolve_device(spec.device))
    m = method(spec.method)
    options = m.options(spec)
    fallback = None
    if substitute := m.substitute(options, str(device)):
        name, fallback = substitute
        m = method(name)  # the substitute takes the same options (qlora's are lora's and more)
    if spec.objective not in m.lr:
        raise TaskfitError(f"method {spec.method} does not apply to objective {spec.objective}",
                           field="tuning[].objective")
    if spec.objective == "classify" and not task.config.labels:
        raise TaskfitError("objective classify needs the task's `labels`", field="labels")
    if spec.objective == "pretrain" and not spec.text_dir:
        raise TaskfitError("objective pretrain needs text_dir (a folder of .txt/.md files)", field="tuning[].text_dir")
    examples = list(train_examples)[: spec.train_limit]
    row = strategy_for(task, spec)
    parts = prompt_parts(task)
    prompt = None
    if spec.objective == "sft":
        prompt = training_prompt(task, row, examples, "score")
        if prompt is None:
            raise TaskfitError(f"strategy {spec.strategy!r} has no single prompt to train on; use zero_shot, "
                               f"structured or persona", field="tuning[].strategy")
    elif spec.objective == "pretrain":  # shown in the before/after table only
        prompt = training_prompt(task, row, [], "generate")
    lr = spec.lr or m.lr[spec.objective]
    config = TrainConfig(epochs=spec.epochs, max_steps=spec.max_steps, lr=lr, batch_size=spec.batch_size,
                         grad_accum=spec.grad_accum, warmup_ratio=spec.warmup_ratio,
                         weight_decay=spec.weight_decay, seed=spec.seed, save_steps=spec.save_steps,
                         group_by_length=spec.group_by_length,
                         mixed_precision=distributed.mixed_precision(spec.mixed_precision, device))
    return Job(task=task, spec=spec, examples=examples, method=m, options=options, fallback=fallback, device=device,
               lr=lr, folder=base_folder(spec.model, task.root), strategy_row=row, parts=parts, prompt=prompt,
               config=config)


def strategy_for(task: Task, spec: TuneSpec) -> StrategySpec:
    """The strategy a tuned model is evaluated with: the prompt it was trained on, or the classifier."""
    if spec.objective == "classify":
        return StrategySpec(name="classifier")
    rows = task.config.strategies
    if spec.objective == "pretrain":
        return next(iter(rows), StrategySpec(name="zero_shot"))
    return next((s for s in rows if s.label() == spec.strategy or s.name == spec.strategy),
                StrategySpec(name=spec.strategy))


def training_prompt(task: Task, row: StrategySpec, train: list[Example], mode: str) -> Prompt | None:
    """The single prompt strategy ``row`` renders for one example (None: it has none, e.g. it samples several
    calls). ``train``: its demonstration pool."""
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=train, mode=mode, seed=task.config.data.seed)
    return getattr(strategies.get(row.name)(row, ctx), "prompt", None)
