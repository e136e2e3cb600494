"""Tuning methods: each decides which weights train, and how (PEFT adapters, unfrozen layers, a new head).

Adding a method: write ``taskfit/tuning/methods/<name>.py`` exposing ``DESCRIPTION``, ``LR`` (default peak
learning rate by objective), ``Options`` (a pydantic model of the method's own keys in a ``tuning:`` row) and
``apply(model, options, task_type) -> model`` (``task_type`` is PEFT's ``CAUSAL_LM`` or ``SEQ_CLS``);
optionally ``load_kwargs(options, device) -> dict`` for how the base model is loaded (qlora's quantization),
``substitute(options, device)`` naming a method to train instead where this one cannot run, and
``MERGEABLE = True`` when the result can be folded into the base weights. Then add one line to ``BUILTINS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from taskfit.registry import Registry


class TuningMethod(Protocol):
    DESCRIPTION: str
    LR: dict[str, float]

    def apply(self, model: torch.nn.Module, options: Any, task_type: str) -> torch.nn.Module: ...


BUILTINS = {
    "full": "taskfit.tuning.methods.full",
    "top_n": "taskfit.tuning.methods.top_n",
    "head": "taskfit.tuning.methods.head",
    "lora": "taskfit.tuning.methods.lora",
    "dora": "taskfit.tuning.methods.dora",
    "qlora": "taskfit.tuning.methods.qlora",
    "prefix": "taskfit.tuning.methods.prefix",
    "prompt_tuning": "taskfit.tuning.methods.prompt_tuning",
    "ia3": "taskfit.tuning.methods.ia3",
}


class _ModuleRegistry(Registry):
    """Methods are modules: a built-in spec names the module alone."""

    def _object(self, name: str) -> Any:
        import importlib

        self._load_plugins()
        if name not in self._loaded and name in self._specs and ":" not in self._specs[name]:
            self._loaded[name] = importlib.import_module(self._specs[name])
        return super()._object(name)


methods = _ModuleRegistry("tuning method", BUILTINS, group="taskfit.tuning_methods")


class NoOptions(BaseModel):
    """The options of a method that takes none: any key in its row is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Method:
    """A registered method seen through one interface: its optional parts get their defaults here, so the
    tuning recipe never asks which method it holds."""

    name: str
    module: Any

    @property
    def lr(self) -> dict[str, float]:
        return self.module.LR

    @property
    def mergeable(self) -> bool:
        return bool(getattr(self.module, "MERGEABLE", False))

    def options(self, spec: Any) -> BaseModel:
        """The method's own keys of a ``tuning:`` row (those its objective does not own) validated against the
        method's ``Options``."""
        from taskfit.plugins import parse_options
        from taskfit.tuning.objectives import split

        return parse_options(methods.options(self.name), split(spec)[1], f"tuning method {self.name}", "tuning[]")

    def substitute(self, options: BaseModel, device: str) -> tuple[str, str] | None:
        hook = getattr(self.module, "substitute", None)
        return hook(options, device) if hook else None

    def load_kwargs(self, options: BaseModel, device: str) -> dict[str, Any]:
        hook = getattr(self.module, "load_kwargs", None)
        return hook(options, device) if hook else {}

    def apply(self, model: torch.nn.Module, options: BaseModel, task_type: str) -> torch.nn.Module:
        return self.module.apply(model, options, task_type)


def method(name: str) -> Method:
    return Method(name, methods.get(name))


def set_trainable(model: torch.nn.Module, predicate) -> None:
    """Train exactly the parameters whose name satisfies ``predicate``."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(predicate(name)))


def head_names(model: torch.nn.Module) -> list[str]:
    """Module names of a classification head (transformers calls it `classifier` or `score`)."""
    return [n for n in ("classifier", "score") if hasattr(model, n)]


def layer_list(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's stack of transformer blocks: the longest ModuleList (encoder.layer, model.layers, h)."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise ValueError(f"{type(model).__name__}: no stack of layers found")
    return best


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their unpacked size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None:  # bitsandbytes Params4bit packs two weights a byte
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def learns_virtual_tokens(model: torch.nn.Module) -> bool:
    """PEFT prompt learning (prefix, prompt tuning): the model's forward injects virtual tokens, so it must
    be called whole, with positions of its own."""
    cfg = getattr(model, "peft_config", None)
    return bool(cfg) and any(c.is_prompt_learning for c in cfg.values())
