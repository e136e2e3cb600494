"""Preference pairs (prompt, chosen, rejected): read from JSONL, as the review app exports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taskfit.errors import TaskfitError

FIELDS = ("prompt", "chosen", "rejected")


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """Records with non-empty string ``prompt``, ``chosen`` and ``rejected``; other keys are kept."""
    if not path.is_file():
        raise TaskfitError(f"{path}: no such preference file")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskfitError(f"{path}:{n}: not JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise TaskfitError(f"{path}:{n}: expected an object with {', '.join(FIELDS)}")
        for f in FIELDS:
            if not isinstance(rec.get(f), str) or not rec[f]:
                raise TaskfitError(f"{path}:{n}: field {f!r} must be a non-empty string")
        if rec["chosen"] == rec["rejected"]:
            raise TaskfitError(f"{path}:{n}: chosen and rejected are the same text")
        out.append(rec)
    if not out:
        raise TaskfitError(f"{path}: no preference pairs")
    return out
