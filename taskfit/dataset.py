"""Rows of a task: read JSONL/CSV, check the declared fields, split, and fingerprint the data."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import TaskfitError
from taskfit.taskfile import Task


@dataclass(frozen=True)
class Example:
    id: str
    fields: dict[str, Any]
    target: str  # the expected output, as text
    answers: tuple[str, ...] = field(default=())  # target plus accepted aliases
    source: str = ""  # "file:line", for error messages


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Return (line number, row) pairs from a .jsonl/.json-lines or .csv file."""
    if not path.exists():
        raise TaskfitError("data file not found", file=str(path))
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row:
                    raise TaskfitError(f"row has {len(row) - 1 + len(row[None])} values but the header has "
                                       f"{len(reader.fieldnames or [])} columns", file=str(path), line=reader.line_num)
                rows.append((reader.line_num, dict(row)))
        return rows
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskfitError(f"malformed JSON ({e.msg} at column {e.colno})", file=str(path), line=lineno) from None
            if not isinstance(row, dict):
                raise TaskfitError(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=lineno)
            rows.append((lineno, row))
    return rows


def to_example(task: Task, path: Path, lineno: int, row: dict[str, Any]) -> Example:
    c = task.config
    for name in [*c.inputs, c.output] + ([c.aliases] if c.aliases else []):
        if name not in row:
            raise TaskfitError(f"missing field {name!r} (row has: {', '.join(row) or 'nothing'})",
                               file=str(path), line=lineno, field=name)
    target = _as_text(row[c.output])
    answers = [target]
    if c.aliases:
        extra = row[c.aliases]
        if not isinstance(extra, list):
            raise TaskfitError(f"field {c.aliases!r} must be a list of accepted answers", file=str(path),
                               line=lineno, field=c.aliases)
        answers += [_as_text(a) for a in extra if _as_text(a) not in answers]
    if c.labels and target not in c.labels:
        raise TaskfitError(f"{c.output}={target!r} is not one of the task's labels {c.labels}",
                           file=str(path), line=lineno, field=c.output)
    row_id = str(row.get(c.data.id_field, f"{path.stem}-{lineno}"))
    return Example(id=row_id, fields=row, target=target, answers=tuple(answers), source=f"{path}:{lineno}")


def _as_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)


class Dataset:
    """The task's splits, loaded once. ``hash`` fingerprints every row of every split."""

    def __init__(self, splits: dict[str, list[Example]], digest: str):
        self.splits = splits
        self.hash = digest

    def split(self, name: str) -> list[Example]:
        if name not in self.splits or not self.splits[name]:
            have = [k for k, v in self.splits.items() if v]
            raise TaskfitError(f"the task has no {name!r} split (it has: {', '.join(have) or 'none'})")
        return self.splits[name]


def load_dataset(task: Task) -> Dataset:
    c = task.config.data
    h = hashlib.sha256()
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    if c.file:
        path = task.resolve(c.file)
        h.update(path.read_bytes() if path.exists() else b"")
        examples = [to_example(task, path, n, r) for n, r in read_rows(path)]
        ratios = c.split or _default_ratios()
        order = list(range(len(examples)))
        random.Random(c.seed).shuffle(order)
        n_train = round(ratios.train * len(order))
        n_dev = round(ratios.dev * len(order))
        for name, idx in (("train", order[:n_train]), ("dev", order[n_train:n_train + n_dev]),
                          ("test", order[n_train + n_dev:])):
            splits[name] = [examples[i] for i in sorted(idx)]
    else:
        for name in ("train", "dev", "test"):
            rel = getattr(c, name)
            if rel:
                path = task.resolve(rel)
                rows = read_rows(path)
                h.update(name.encode() + path.read_bytes())
                splits[name] = [to_example(task, path, n, r) for n, r in rows]
    _check_unique_ids(splits)
    return Dataset(splits, h.hexdigest()[:16])


def _check_unique_ids(splits: dict[str, list[Example]]) -> None:
    for name, exs in splits.items():
        seen: dict[str, str] = {}
        for ex in exs:
            if ex.id in seen:
                raise TaskfitError(f"duplicate id {ex.id!r} in the {name} split (also at {seen[ex.id]})",
                                   file=ex.source.rsplit(":", 1)[0], line=int(ex.source.rsplit(":", 1)[1]))
            seen[ex.id] = ex.source


def _default_ratios():
    from taskfit.taskfile import SplitRatios

    return SplitRatios(train=0.5, dev=0.0, test=0.5)


def rows_dataset(task: Task) -> Dataset:
    """The splits of a task built from rows in memory, checked like rows read from a file."""
    h = hashlib.sha256()
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for split, given in (task.rows or {}).items():
        where = Path(f"{split}-rows")  # errors read "test-rows:3: missing field 'label'"
        for i, row in enumerate(given, start=1):
            if not isinstance(row, dict):
                raise TaskfitError(f"expected a mapping, got {type(row).__name__}", file=str(where), line=i)
        splits[split] = [to_example(task, where, i, row) for i, row in enumerate(given, start=1)]
        h.update(split.encode() + json.dumps(given, sort_keys=True, default=str).encode())
    _check_unique_ids(splits)
    return Dataset(splits, h.hexdigest()[:16])
