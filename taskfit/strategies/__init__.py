"""Prompt strategies: each turns a batch of examples into predictions, with a trace of its model calls.

Adding a strategy: write ``taskfit/strategies/<name>.py`` exposing ``create(spec, ctx) -> Strategy``,
``DESCRIPTION`` and ``Options`` (the pydantic model of its keys, checked when a task is loaded; ``create`` reads
them with ``taskfit.strategies.options.parse_options``), then add one line to ``BUILTINS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.prompts import PromptParts
from taskfit.registry import Registry
from taskfit.taskfile import Task

if TYPE_CHECKING:
    from taskfit.workspace import Workspace


@dataclass
class Prediction:
    output: str  # what the model said (or the chosen label when scoring)
    answer: str | None  # parsed answer; None when parsing failed or the call failed
    trace: Trace
    parse_failed: bool = False
    failed: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyContext:
    """What a strategy may use besides the examples: the task, its prompt parts, the demo pool, and the
    workspace (for strategies built from stored state, such as an optimization run)."""

    task: Task
    parts: PromptParts
    train: list[Example]
    mode: Literal["score", "generate"]
    seed: int = 0
    workspace: Workspace | None = None

    def input_key(self, e: Example) -> str:
        """A row's input as the model is shown it (its input fields): rows with the same key are one question,
        so a query's demos leave out every row with its key (``taskfit.selection``)."""
        return json.dumps([e.fields.get(k) for k in self.task.config.inputs], sort_keys=True, default=str)


class Strategy(Protocol):
    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]: ...


BUILTINS = {
    "zero_shot": "taskfit.strategies.zero_shot:create",
    "few_shot": "taskfit.strategies.few_shot:create",
    "one_shot": "taskfit.strategies.one_shot:create",
    "structured": "taskfit.strategies.structured:create",
    "persona": "taskfit.strategies.persona:create",
    "cot": "taskfit.strategies.cot:create",
    "zero_shot_cot": "taskfit.strategies.zero_shot_cot:create",
    "self_consistency": "taskfit.strategies.self_consistency:create",
    "self_refine": "taskfit.strategies.self_refine:create",
    "tree_of_thoughts": "taskfit.strategies.tree_of_thoughts:create",
    "chain": "taskfit.strategies.chain:create",
    "chain_step": "taskfit.strategies.chain_step:create",
    "rag": "taskfit.strategies.rag:create",
    "react": "taskfit.strategies.react:create",
    "tools": "taskfit.strategies.react:create",
    "program_of_thought": "taskfit.strategies.program_of_thought:create",
    "optimized": "taskfit.strategies.optimized:create",
    "classifier": "taskfit.strategies.classifier:create",
    "least_to_most": "taskfit.strategies.least_to_most:create",
    "plan_and_solve": "taskfit.strategies.plan_and_solve:create",
    "step_back": "taskfit.strategies.step_back:create",
    "chain_of_verification": "taskfit.strategies.chain_of_verification:create",
    "system2_attention": "taskfit.strategies.system2_attention:create",
    "analogical": "taskfit.strategies.analogical:create",
    "contrastive_cot": "taskfit.strategies.contrastive_cot:create",
    "auto_cot": "taskfit.strategies.auto_cot:create",
    "active_prompt": "taskfit.strategies.active_prompt:create",
    "metacognitive": "taskfit.strategies.metacognitive:create",
    "self_ask": "taskfit.strategies.self_ask:create",
    "rationale": "taskfit.strategies.rationale:create",
}

strategies = Registry("strategy", BUILTINS, group="taskfit.strategies")


def describe(name: str) -> str:
    import importlib

    spec = strategies._specs.get(name)
    if spec:
        return getattr(importlib.import_module(spec.partition(":")[0]), "DESCRIPTION", "")
    return getattr(strategies.get(name), "__doc__", "") or ""
