"""Base models for tuning and tuned models for evaluation: where the weights are and how they load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from taskfit.errors import TaskfitError


def base_folder(name: str, root: Path | None = None) -> Path:
    """``bundled`` (SmolLM2-135M-Instruct), ``minilm`` (all-MiniLM-L6-v2), a model folder or a .gguf file."""
    from taskfit import bundled

    if name in ("bundled", "smollm2"):
        return bundled.smollm2_dir()
    if name == "minilm":
        return bundled.minilm_dir()
    p = Path(name).expanduser()
    if not p.is_absolute() and root is not None and (root / p).exists():
        p = root / p
    if not p.exists():
        raise TaskfitError(f"base model {name!r} not found", field="tuning[].model")
    return bundled.converted_gguf(p) if p.suffix == ".gguf" else p


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def is_encoder(folder: Path) -> bool:
    cfg = json.loads((folder / "config.json").read_text())
    return not any(a.endswith("ForCausalLM") for a in cfg.get("architectures") or []) and \
        cfg.get("model_type") in ("bert", "roberta", "distilbert", "mpnet", "xlm-roberta", "electra", "deberta-v2")


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_for_objective(folder: Path, objective: str, labels: list[str] | None, device: torch.device,
                       seed: int, extra: dict[str, Any] | None = None) -> torch.nn.Module:
    """The base model with the right head: a causal LM (sft, pretrain) or a new classification head."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized: classifier.weight" is the point of a new head
    hf_logging.disable_progress_bar()
    extra = dict(extra or {})
    quantized = "quantization_config" in extra
    # fp32 unless quantised: the bundled weights' config says bfloat16, which transformers would otherwise
    # load as is, and bf16 arithmetic on most CPUs is many times slower than fp32
    extra.setdefault("dtype", torch.bfloat16 if quantized else torch.float32)
    torch.manual_seed(seed)  # the new head's initial weights
    if objective == "classify":
        if not labels:
            raise TaskfitError("objective classify needs the task's `labels`", field="labels")
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}, **extra)
        if model.config.pad_token_id is None:  # causal LMs as classifiers find the last real token by padding
            model.config.pad_token_id = load_tokenizer(folder).pad_token_id
    else:
        if is_encoder(folder):
            raise TaskfitError(f"{folder.name} is an encoder: it can only be tuned with objective classify",
                               field="tuning[].objective")
        model = AutoModelForCausalLM.from_pretrained(folder, **extra)
    if not quantized:
        model = model.to(device)
    return model
