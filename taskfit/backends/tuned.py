"""Fine-tuned models (``tuned:<id>``) as backends, so they are scored like any other model.

A causal LM trained with sft or pretrain becomes an ``HFBackend`` over the base weights with its adapter
(merged into the weights where the method allows, which makes it exactly as fast as the base) or its full
weights. A classification model becomes a ``ClassifierBackend``: it scores labels with its head, for the
``classifier`` strategy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, backend_options
from taskfit.calibration import measure_forward
from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec

if TYPE_CHECKING:
    from taskfit.workspace import Workspace

PREFIX = "tuned:"


class Options(BaseModel):
    """``backend: tuned``: a model trained by `taskfit tune` or a task's `tuning:` rows."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="tuned:<id> of the fine-tuned model.")
    device: str = Field("auto", description="cpu, cuda, cuda:1 or auto.")
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")
    serve_via: dict[str, Any] | None = Field(
        None, description="Evaluate a LoRA adapter on an inference server with dynamic LoRA loading, "
        "e.g. {base_url: http://127.0.0.1:8000/v1}; keys as for openai models (see docs/servers.md). Without "
        "`path`, every tuned model of the study is evaluated there.")

    def label(self) -> str:
        return self.path or "tuned"


def tune_id(spec: ModelSpec) -> str:
    path = backend_options(spec).path or ""
    if not path.startswith(PREFIX):
        raise TaskfitError(f"a tuned model is named {PREFIX}<id>, got {path!r}", field="models[].path")
    return path[len(PREFIX):]


def create(spec: ModelSpec, *, workspace: Workspace | None = None):
    from taskfit.tuning.models import load_tokenizer, resolve_device

    o = backend_options(spec)
    if workspace is None:
        raise TaskfitError(f"model {o.path!r}: a tuned model is looked up in a workspace; none was given")
    rec = workspace.tunes.get(tune_id(spec))
    if rec.status != "done":
        raise TaskfitError(f"tuned model {rec.id} has not finished training (status {rec.status}); "
                           f"run `taskfit tune` again to resume it")
    meta = json.loads((rec.folder / "tune.json").read_text())
    if o.serve_via is not None:  # evaluated on an inference server that loads the adapter
        from taskfit.backends import served_adapter

        return served_adapter.create(spec, rec, meta)
    device = resolve_device(o.device)
    tokenizer = load_tokenizer(rec.folder / "tokenizer")
    model, plain = load_model(rec.folder, meta, device)
    model_id = f"tuned:{rec.id}:{meta['weights_sha']}"
    if meta["objective"] == "classify":
        return ClassifierBackend(model, tokenizer, meta["labels"], model_id, device, o.batch_size)
    from taskfit.backends.hf import HFBackend

    spec = ModelSpec(backend="hf", name=spec.label(), device=str(device), batch_size=o.batch_size,
                     chat_template=meta.get("chat_template", True))
    return HFBackend(rec.folder, spec, model=model, tokenizer=tokenizer, model_id=model_id, plain_forward=plain)


def load_model(folder: Path, meta: dict[str, Any], device: torch.device) -> tuple[torch.nn.Module, bool]:
    """The tuned model in eval mode, and whether it must be run through its full forward (soft prompts)."""
    from peft import PeftModel

    from taskfit.tuning.models import base_folder, load_for_objective

    if (folder / "model").exists():  # full weights (full, top_n, head, merged adapters)
        base, adapter = folder / "model", None
    else:
        base, adapter = base_folder(meta["base_model"], Path(meta.get("task_root", "."))), folder / "adapter"
    model = load_for_objective(base, meta["objective"], meta.get("labels"), device, seed=0)
    plain = False
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
        if meta.get("mergeable"):
            model = model.merge_and_unload()
        else:
            plain = True
    model.to(device).eval()
    return model, plain


def live_backend(model, tokenizer, device: torch.device, chat_template: bool, model_id: str):
    """An HFBackend around a model in memory (during tuning: the before/after table, the forgetting check)."""
    from taskfit.backends.hf import HFBackend
    from taskfit.tuning.methods import learns_virtual_tokens

    return HFBackend(Path("."), ModelSpec(backend="hf", device=str(device), chat_template=chat_template), model=model,
                     tokenizer=tokenizer, model_id=model_id, plain_forward=learns_virtual_tokens(model))


class ClassifierBackend:
    """Scores a task's labels with a classification head: the log-softmax of its logits."""

    local = True
    supports_score = True
    supports_tools = False
    scores_labels = True  # its scores are calibrated class probabilities: no contextual calibration

    def __init__(self, model, tokenizer, labels: list[str], model_id: str, device: torch.device, batch_size: int):
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.model_id, self.device = model_id, device
        self.batch_size = max(batch_size, 32)
        self.max_length = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)

    def describe(self) -> dict[str, Any]:
        return {"backend": "classifier", "device": str(self.device), "labels": self.labels,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    def calibrate(self, repeats: int) -> dict[str, tuple[float, float]]:
        """Seconds per encoded token of a batched forward pass (taskfit.calibration); it generates nothing."""
        return {"forward": measure_forward(self.model, self.device, repeats)}

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        return [GenerateResult(texts=[], error="a classification model does not generate text; "
                               "use the classifier strategy") for _ in requests]

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        index = {lab.lower(): i for i, lab in enumerate(self.labels)}
        texts = [_user_text(r) for r in requests]
        out: list[ScoreResult] = []
        for start in range(0, len(requests), self.batch_size):
            t0 = time.perf_counter()
            chunk = texts[start:start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            logp = torch.log_softmax(self.model(**enc).logits.float(), dim=-1).tolist()
            ms = (time.perf_counter() - t0) * 1000 / len(chunk)
            for k, r in enumerate(requests[start:start + self.batch_size]):
                lps = []
                for c in r.continuations:
                    i = index.get(c.strip().lower())
                    lps.append(logp[k][i] if i is not None else float("-inf"))
                out.append(ScoreResult(logprobs=lps, token_counts=[1] * len(lps),
                                       tokens_in=int(enc["attention_mask"][k].sum()), latency_ms=ms))
        return out


def _user_text(r: ScoreRequest) -> str:
    users = [m["content"] for m in r.messages if m["role"] == "user"]
    return users[-1] if users else ""
