"""qlora: LoRA on a base whose weights are quantised to 4 (or 8) bits with bitsandbytes (Dettmers et al., 2023).

bitsandbytes' k-bit layers need CUDA. On a machine without it the run stops with an explanation, unless the
spec sets ``allow_fallback``, in which case plain LoRA trains on the full-precision base and the run's
result records the fallback.
"""

import torch
from peft import get_peft_model, prepare_model_for_kbit_training

from taskfit.tuning.methods import lora

DESCRIPTION = "LoRA on a 4-bit (NF4) or 8-bit base: the least memory for the weights (CUDA)."
LR = lora.LR
MERGEABLE = True


def available(device: str) -> str | None:
    """Why qlora cannot run here, or None when it can."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "qlora quantises the base with bitsandbytes, which needs a CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "qlora needs bitsandbytes: pip install 'taskfit[gpu]'"
    return None


def load_kwargs(spec, device: str) -> dict:
    from transformers import BitsAndBytesConfig

    if spec.bits == 2:
        raise ValueError("qlora: 2-bit base weights are not supported by bitsandbytes; use bits 4 or 8")
    if spec.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)}


def apply(model, spec, task_type):
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora.config(spec, task_type))
