"""Several training processes (one per GPU, or gloo processes on a CPU) through accelerate.

``taskfit tune`` runs unchanged under ``accelerate launch``: every process builds the same job and model,
trains on its share of each batch, and only the main process writes the store, checkpoints and artifacts.
DDP, FSDP and DeepSpeed ZeRO come from the accelerate config the command is launched with.
"""

from __future__ import annotations

import os

import torch


def processes() -> int:
    """How many training processes ``accelerate launch`` / torchrun started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    return processes() > 1


def process_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU (``cuda:<local rank>``) when launched on GPUs, else ``device``."""
    if not launched():
        return device
    from accelerate import PartialState

    return PartialState(cpu=device.type == "cpu").device


def is_main_process() -> bool:
    if not launched():
        return True
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    if launched():
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def mixed_precision(setting: str, device: torch.device) -> str:
    """The autocast precision a run uses: ``auto`` is the launcher's choice (``accelerate launch
    --mixed_precision`` or its config file) when it made one, else bf16 on a GPU that supports it, else none."""
    if setting != "auto":
        return setting
    chosen = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if chosen != "no":
        return chosen
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def accelerator(device: torch.device, precision: str):
    """The ``Accelerator`` of one training run. A single process gets a fresh one per run (accelerate's state is
    process-wide, and two runs in one process may differ in precision); launched processes share theirs."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not launched():
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision)


def sharded(acc) -> bool:
    """Whether parameters and optimizer states are split across processes (FSDP, DeepSpeed ZeRO): checkpoints
    then go through accelerate's ``save_state``/``load_state``, one shard per process."""
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def launch_zero_stage() -> int:
    """The ZeRO stage ``accelerate launch`` was configured with (FSDP full sharding counts as 3), before any
    ``Accelerator`` exists: from the environment the launcher sets."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return 3
    return 0
