"""head: train only a new classification head on top of a frozen model (transfer learning)."""

from taskfit.tuning.methods import NoOptions, head_names, set_trainable

DESCRIPTION = "Only a new classification head trains on frozen features (transfer learning)."
LR = {"classify": 2e-3}
MERGEABLE = True
Options = NoOptions


def apply(model, options, task_type):
    if task_type != "SEQ_CLS":
        raise ValueError("method 'head' trains a new classification head: use objective 'classify'")
    heads = tuple(f"{h}." for h in head_names(model))
    set_trainable(model, lambda n: n.startswith(heads))
    return model
