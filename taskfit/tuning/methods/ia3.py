"""ia3: learned scaling vectors on keys, values and feed-forward activations (Liu et al., 2022)."""

from peft import IA3Config, get_peft_model
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "Learned rescaling vectors on keys, values and feed-forward (fewest parameters)."
LR = {"sft": 3e-3, "classify": 5e-3, "pretrain": 3e-3}
MERGEABLE = True


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_modules: list[str] | None = Field(
        None, description="Module names to rescale (default: PEFT's choice for the architecture).")


def apply(model, options: Options, task_type):
    kwargs = {}
    if options.target_modules:
        kwargs = {"target_modules": options.target_modules, "feedforward_modules": []}
    return get_peft_model(model, IA3Config(task_type=task_type, **kwargs))
