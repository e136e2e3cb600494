"""prefix: learned key/value vectors prepended at every layer (Li & Liang, 2021)."""

from peft import PrefixTuningConfig, get_peft_model

DESCRIPTION = "Learned key/value prefixes at every layer; the model is untouched."
LR = {"sft": 1e-2, "classify": 1e-2, "pretrain": 1e-2}
MERGEABLE = False


def apply(model, spec, task_type):
    return get_peft_model(model, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=spec.num_virtual_tokens))
