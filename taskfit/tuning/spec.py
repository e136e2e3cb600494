"""What a fine-tuning run is: the method, the objective, the base model and the hyperparameters.

A ``TuneSpec`` is one row of a task file's ``tuning:`` list, or the options of ``taskfit tune``. It only
imports pydantic, so the task-file schema can use it without loading torch. The keys below are shared by every
method; the others are the objective's own options (dpo's, in ``taskfit/tuning/dpo.py``) and the method's own
options (``Options`` in its module), checked when the task is prepared (``taskfit/tuning/objectives.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TuneSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    method: str = Field("lora", description="Tuning method (see `taskfit tune --help`): full, top_n, head, lora, "
                        "dora, qlora, prefix, prompt_tuning, ia3.")
    objective: Literal["sft", "classify", "pretrain", "dpo"] = Field(
        "sft", description="sft: learn the task's answers as replies to its prompt (loss on answer tokens only); "
        "classify: a classification head over the task's labels; pretrain: causal LM loss on raw text (text_dir); "
        "dpo: learn to prefer chosen over rejected replies (preference pairs; a PEFT method).")
    model: str = Field("bundled", description="Base model: bundled (SmolLM2-135M-Instruct), minilm "
                       "(all-MiniLM-L6-v2 encoder, classify only), a local model folder or a .gguf file.")
    name: str | None = Field(None, description="Row name on the leaderboard (default: <model>+<method>).")
    strategy: str = Field("zero_shot", description="sft: the prompt strategy whose prompt the model is trained "
                          "on and evaluated with (same template at train and inference time).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate (default: the method's).")
    batch_size: int = Field(16, ge=1, description="Rows per optimizer step (before accumulation).")
    grad_accum: int = Field(1, ge=1, description="Batches accumulated per optimizer step.")
    max_length: int = Field(256, ge=8, description="Longest training sequence in tokens (longer rows are cut).")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with a linearly rising rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    train_limit: int | None = Field(None, ge=1, description="Train on the first N rows of the train split only.")
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    text_dir: str | None = Field(None, description="pretrain: folder of .txt/.md files (relative to the task file).")
    device: str = Field("auto", description="cpu, cuda or auto.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps (resume point).")
    group_by_length: bool = Field(True, description="Batch rows of similar length together (less padding).")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision of the forward pass. auto: what `accelerate launch` was told, "
        "else bf16 on a GPU that supports it, else none (fp32).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: far "
                                         "less activation memory for about a third more compute.")
    forgetting: bool = Field(True, description="Measure forgetting on a general sample before/after training.")

    @property
    def options(self) -> dict[str, Any]:
        """The row's other keys, as written: the objective's own and the method's own (told apart and checked
        against their ``Options`` by ``taskfit.tuning.objectives`` when the task is prepared)."""
        return dict(self.model_extra or {})

    def label(self) -> str:
        if self.name:
            return self.name
        base = {"bundled": "smollm2-135m", "minilm": "minilm"}.get(self.model, self.model.rstrip("/").split("/")[-1])
        return f"{base}+{self.method}" + ("" if self.objective == "sft" else f"-{self.objective}")
