"""qlora: LoRA on a base whose weights are quantised to 4 (or 8) bits with bitsandbytes (Dettmers et al., 2023).

bitsandbytes' k-bit layers need CUDA. On a machine without it the run stops with an explanation, unless the
spec sets ``allow_fallback``, in which case plain LoRA trains on the full-precision base and the run's
result records the fallback.
"""

from typing import Literal

import torch
from peft import get_peft_model, prepare_model_for_kbit_training
from pydantic import Field

from taskfit.errors import TaskfitError
from taskfit.tuning.methods import lora

DESCRIPTION = "LoRA on a 4-bit (NF4) or 8-bit base: the least memory for the weights (CUDA)."
LR = lora.LR
MERGEABLE = True


class Options(lora.Options):
    """Options of qlora: lora's, and how the base is quantised."""

    bits: Literal[4, 8] = Field(4, description="Bits per base weight (4: NF4; 8: LLM.int8); bitsandbytes has "
                                "no 2-bit layers.")
    allow_fallback: bool = Field(False, description="Without CUDA: train plain lora instead of failing.")


def available(device: str) -> str | None:
    """Why qlora cannot run here, or None when it can."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "qlora quantises the base with bitsandbytes, which needs a CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "qlora needs bitsandbytes: pip install 'taskfit[gpu]'"
    return None


def substitute(options: Options, device: str) -> tuple[str, str] | None:
    """The method to train instead on ``device``, and why (None: qlora runs here); an error when it cannot and
    ``allow_fallback`` is off."""
    why = available(device)
    if why is None:
        return None
    if not options.allow_fallback:
        raise TaskfitError(f"{why}; use method lora here, or allow_fallback (--allow-fallback) to train "
                           f"plain LoRA on the full-precision base instead", field="tuning[].method")
    return "lora", f"{why}: trained plain lora instead"


def load_kwargs(options: Options, device: str) -> dict:
    from transformers import BitsAndBytesConfig

    if options.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)}


def apply(model, options: Options, task_type):
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora.config(options, task_type))
