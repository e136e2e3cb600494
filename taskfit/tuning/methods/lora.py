"""lora: low-rank adapters on the attention (or chosen) projections; the base stays frozen (Hu et al., 2021)."""

from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "Low-rank adapters on chosen projections; the base stays frozen."
LR = {"sft": 2e-4, "classify": 5e-4, "pretrain": 2e-4}
MERGEABLE = True




class Options(BaseModel):
    """Options of lora (and dora)."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1, description="Rank r; higher fits more, costs memory.")
    alpha: int | None = Field(None, ge=1, description="Scaling alpha (default: 2 x rank).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt (default: PEFT's choice for the architecture, e.g. "
        "q_proj/v_proj, query/value).")


def config(options: Options, task_type, **extra) -> LoraConfig:
    return LoraConfig(task_type=task_type, r=options.rank, lora_alpha=options.alpha or 2 * options.rank,
                      lora_dropout=options.dropout, target_modules=options.target_modules, **extra)


def apply(model, options: Options, task_type):
    return get_peft_model(model, config(options, task_type))
