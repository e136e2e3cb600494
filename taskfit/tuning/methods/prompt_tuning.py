"""prompt_tuning: learned input embeddings ("soft prompt") before the input (Lester et al., 2021)."""

from peft import PromptTuningConfig, get_peft_model
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "A learned soft prompt (virtual token embeddings) before the input."
LR = {"sft": 3e-2, "classify": 3e-2, "pretrain": 3e-2}
MERGEABLE = False


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_virtual_tokens: int = Field(16, ge=1, description="Learned virtual tokens.")


def apply(model, options: Options, task_type):
    return get_peft_model(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=options.num_virtual_tokens))
