"""top_n: train only the last N transformer layers (plus the head and the final norm); the rest is frozen."""

from pydantic import BaseModel, ConfigDict, Field

from taskfit.tuning.methods import head_names, layer_list, set_trainable

DESCRIPTION = "Only the top N layers (and the head) train; lower layers keep their general features."
LR = {"sft": 5e-5, "classify": 1e-4, "pretrain": 5e-5}
MERGEABLE = True


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_n: int = Field(2, ge=1, description="How many of the last transformer layers train.")


def apply(model, options: Options, task_type):
    prefix, layers = layer_list(model)
    if options.top_n > len(layers):
        raise ValueError(f"top_n={options.top_n} but the model has {len(layers)} layers")
    keep = tuple(f"{prefix}.{i}." for i in range(len(layers) - options.top_n, len(layers)))
    heads = tuple(f"{h}." for h in head_names(model))
    # after the last layer: the final norm (model.norm, ln_f) and, for causal LMs, the output layer
    tail = ("norm.", "ln_f.", "final_layer_norm.", "lm_head.", "pooler.")
    set_trainable(model, lambda n: n.startswith(keep) or n.startswith(heads) or any(t in n for t in tail))
    return model
