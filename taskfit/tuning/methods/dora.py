"""dora: LoRA with the weight split into magnitude and direction (Liu et al., 2024)."""

from peft import get_peft_model

from taskfit.tuning.methods import lora

DESCRIPTION = "LoRA with separate magnitude and direction (weight-decomposed)."
LR = lora.LR
MERGEABLE = True
Options = lora.Options


def apply(model, options: Options, task_type):
    return get_peft_model(model, lora.config(options, task_type, use_dora=True))
