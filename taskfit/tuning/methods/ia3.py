"""ia3: learned scaling vectors on keys, values and feed-forward activations (Liu et al., 2022)."""

from peft import IA3Config, get_peft_model

DESCRIPTION = "Learned rescaling vectors on keys, values and feed-forward (fewest parameters)."
LR = {"sft": 3e-3, "classify": 5e-3, "pretrain": 3e-3}
MERGEABLE = True


def apply(model, spec, task_type):
    kwargs = {}
    if spec.target_modules:
        kwargs = {"target_modules": spec.target_modules, "feedforward_modules": []}
    return get_peft_model(model, IA3Config(task_type=task_type, **kwargs))
