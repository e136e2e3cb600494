"""full: every weight trains (the most capable and the most memory: weights, gradients, 2 AdamW states)."""

from taskfit.tuning.methods import NoOptions, set_trainable

DESCRIPTION = "Every weight trains: the most capable, the most memory."
LR = {"sft": 2e-5, "classify": 5e-5, "pretrain": 2e-5}
MERGEABLE = True
Options = NoOptions


def apply(model, options, task_type):
    set_trainable(model, lambda name: True)
    return model
