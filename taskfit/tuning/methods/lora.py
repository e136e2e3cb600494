"""lora: low-rank adapters on the attention (or chosen) projections; the base stays frozen (Hu et al., 2021)."""

from peft import LoraConfig, get_peft_model

DESCRIPTION = "Low-rank adapters on chosen projections; the base stays frozen."
LR = {"sft": 2e-4, "classify": 5e-4, "pretrain": 2e-4}
MERGEABLE = True


def config(spec, task_type, **extra) -> LoraConfig:
    return LoraConfig(task_type=task_type, r=spec.rank, lora_alpha=spec.alpha or 2 * spec.rank,
                      lora_dropout=spec.dropout, target_modules=spec.target_modules, **extra)


def apply(model, spec, task_type):
    return get_peft_model(model, config(spec, task_type))
