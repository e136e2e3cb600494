"""Tuned models on record: one row per training run (``tunes`` table) and a folder of artifacts each.

A tuned model's folder holds the adapter or the weights (safetensors), their config, the tokenizer, the exact
prompt template and one rendered training row (``template.json``), and ``tune.json`` (spec, data hash, seed,
package versions, measurements). ``checkpoints/last.pt`` is the resume point while training runs.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from taskfit.errors import TaskfitError


@dataclass
class TuneRecord:
    id: str
    key: str
    status: str
    task_name: str
    task_path: str
    method: str
    objective: str
    base_model: str
    data_hash: str
    seed: int
    spec: dict[str, Any]
    versions: dict[str, str]
    artifact_dir: str
    result: dict[str, Any]
    created: float
    finished: float | None

    @property
    def folder(self) -> Path:
        return Path(self.artifact_dir)


class TuneStore:
    """Tune records in the database at ``eng``; each model's artifacts in a subfolder of ``folder``."""

    def __init__(self, eng: Engine, folder: Path):
        self.eng = eng
        self.folder = folder

    def create(self, **fields: Any) -> TuneRecord:
        tid = uuid.uuid4().hex[:8]
        folder = self.folder / tid
        folder.mkdir(parents=True, exist_ok=True)
        row = {"id": tid, "created": time.time(), "status": "running", "artifact_dir": str(folder),
               "result": "{}", **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}}
        with self.eng.begin() as c:
            c.execute(text(f"INSERT INTO tunes ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"), row)
        return self.get(tid)

    def update(self, tid: str, result: dict[str, Any]) -> None:
        """Record a running tune's result so far (its resume point)."""
        with self.eng.begin() as c:
            c.execute(text("UPDATE tunes SET result = :r WHERE id = :id"), {"r": json.dumps(result), "id": tid})

    def finish(self, tid: str, result: dict[str, Any], status: str = "done") -> None:
        """Record a tune's final result; ``status`` is done, or failed/cancelled for a provider's job."""
        with self.eng.begin() as c:
            c.execute(text("UPDATE tunes SET result = :r, status = :s, finished = :f WHERE id = :id"),
                      {"r": json.dumps(result), "s": status, "f": time.time(), "id": tid})

    def by_key(self, key: str) -> TuneRecord | None:
        """The newest finished run with this key, else the newest unfinished one (to resume)."""
        with self.eng.connect() as c:
            rows = c.execute(text("SELECT * FROM tunes WHERE key = :k ORDER BY (status = 'done') DESC, created DESC"),
                             {"k": key}).mappings().all()
        return _record(rows[0]) if rows else None

    def get(self, tid: str) -> TuneRecord:
        """A tuned model by id or unique id prefix."""
        with self.eng.connect() as c:
            rows = c.execute(text("SELECT * FROM tunes WHERE id LIKE :p"), {"p": tid + "%"}).mappings().all()
        if not rows:
            raise TaskfitError(f"no tuned model {tid!r} (see `taskfit runs`)")
        if len(rows) > 1:
            raise TaskfitError(f"tuned model id {tid!r} is ambiguous: {', '.join(r['id'] for r in rows)}")
        return _record(rows[0])

    def list(self, limit: int = 50) -> list[TuneRecord]:
        with self.eng.connect() as c:
            rows = c.execute(text("SELECT * FROM tunes ORDER BY created DESC LIMIT :n"), {"n": limit}).mappings().all()
        return [_record(r) for r in rows]


def _record(r: Any) -> TuneRecord:
    d = dict(r)
    for k in ("spec", "versions", "result"):
        d[k] = json.loads(d[k])
    return TuneRecord(**d)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def save_weights(folder: Path, model: Any, tokenizer: Any, state_dict: dict | None = None) -> dict[str, Any]:
    """The adapter (``adapter/``, PEFT methods) or the full weights (``model/``), as safetensors, and the
    tokenizer; returns their sizes and the weights' digest. ``state_dict``: the weights gathered from the
    processes they were sharded across (FSDP, ZeRO-3)."""
    is_peft = hasattr(model, "peft_config")
    out = folder / ("adapter" if is_peft else "model")
    model.save_pretrained(out, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    tokenizer.save_pretrained(folder / "tokenizer")
    h = hashlib.sha256()
    for f in sorted(out.glob("*.safetensors")):
        h.update(f.read_bytes())
    return {"adapter": is_peft, "weights_sha": h.hexdigest()[:12],
            "trainable_mb": sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20,
            "artifact_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20}
