"""prompt_tuning: learned input embeddings ("soft prompt") before the input (Lester et al., 2021)."""

from peft import PromptTuningConfig, get_peft_model

DESCRIPTION = "A learned soft prompt (virtual token embeddings) before the input."
LR = {"sft": 3e-2, "classify": 3e-2, "pretrain": 3e-2}
MERGEABLE = False


def apply(model, spec, task_type):
    return get_peft_model(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=spec.num_virtual_tokens))
