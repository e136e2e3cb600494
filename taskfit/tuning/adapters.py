"""Adapters after training: fold one into its base weights, or keep several on one base and switch by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from taskfit.errors import TaskfitError
from taskfit.tuning.models import base_folder, load_for_objective, resolve_device
from taskfit.tuning.store import TuneStore


def merge(tune_id: str, output: str | Path | None = None, *, store: TuneStore) -> Path:
    """Merge a LoRA/DoRA/IA3 adapter into its base and save a standalone model folder (safetensors)."""
    from peft import PeftModel

    rec = store.get(tune_id)
    meta = json.loads((rec.folder / "tune.json").read_text())
    if not (rec.folder / "adapter").exists():
        raise TaskfitError(f"tuned:{rec.id} holds full weights already (method {meta['method_used']}): nothing to merge")
    if not meta.get("mergeable"):
        raise TaskfitError(f"tuned:{rec.id} ({meta['method_used']}) learns virtual tokens, which cannot be folded "
                           f"into the weights; use it as tuned:{rec.id}")
    device = torch.device("cpu")
    base = load_for_objective(base_folder(meta["base_model"], Path(meta["task_root"])), meta["objective"],
                              meta.get("labels"), device, seed=0)
    merged = PeftModel.from_pretrained(base, rec.folder / "adapter").merge_and_unload()
    out = Path(output) if output else rec.folder / "merged"
    merged.save_pretrained(out, safe_serialization=True)
    for f in (rec.folder / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out


class AdapterSet:
    """Several adapters of the same base model loaded once; ``use(name)`` switches the active one.

    Only the small adapter weights are duplicated, so N task-specific models cost one base in memory."""

    def __init__(self, adapters: dict[str, str], device: str = "auto", *, store: TuneStore):
        from peft import PeftModel

        if not adapters:
            raise TaskfitError("an adapter set needs at least one tuned model")
        recs = {name: store.get(tid.removeprefix("tuned:")) for name, tid in adapters.items()}
        metas = {name: json.loads((r.folder / "tune.json").read_text()) for name, r in recs.items()}
        bases = {(m["base_model"], m["objective"]) for m in metas.values()}
        if len(bases) > 1:
            raise TaskfitError(f"adapters on different bases or objectives cannot share a model: {sorted(bases)}")
        for name, r in recs.items():
            if not (r.folder / "adapter").exists():
                raise TaskfitError(f"{name} (tuned:{r.id}) has full weights, not an adapter")
        first, *rest = recs
        meta = metas[first]
        self.device = resolve_device(device)
        base = load_for_objective(base_folder(meta["base_model"], Path(meta["task_root"])), meta["objective"],
                                  meta.get("labels"), self.device, seed=0)
        self.model = PeftModel.from_pretrained(base, recs[first].folder / "adapter", adapter_name=first)
        for name in rest:
            self.model.load_adapter(recs[name].folder / "adapter", adapter_name=name)
        self.model.eval()
        self.names = list(recs)
        self.active = first

    def use(self, name: str) -> torch.nn.Module:
        """Make ``name`` the active adapter and return the model."""
        if name not in self.names:
            raise TaskfitError(f"no adapter {name!r}; loaded: {', '.join(self.names)}")
        self.model.set_adapter(name)
        self.active = name
        return self.model
