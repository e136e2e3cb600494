"""prefix: learned key/value vectors prepended at every layer (Li & Liang, 2021)."""

from peft import PrefixTuningConfig, get_peft_model
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "Learned key/value prefixes at every layer; the model is untouched."
LR = {"sft": 1e-2, "classify": 1e-2, "pretrain": 1e-2}
MERGEABLE = False


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_virtual_tokens: int = Field(16, ge=1, description="Learned virtual tokens.")


def apply(model, options: Options, task_type):
    return get_peft_model(model, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=options.num_virtual_tokens))
