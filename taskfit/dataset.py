"""Rows of a task: read JSONL/CSV, check the declared fields, split, and fingerprint the data."""

from __future__ import annotations

import csv
import hashlib
import io
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
    """Return (line number, row) pairs from a .jsonl/.json-lines or .csv file (UTF-8, with or without a BOM)."""
    if not path.is_file():
        raise TaskfitError("data file not found" if not path.exists() else "not a file", file=str(path))
    text = _read_text(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                _check_csv_row(row, len(reader.fieldnames or []), path, reader.line_num)
                rows.append((reader.line_num, dict(row)))
        except csv.Error as e:
            raise TaskfitError(f"malformed CSV ({e})", file=str(path), line=reader.line_num or 1) from None
        return rows
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskfitError(f"malformed JSON ({e.msg} at column {e.colno})", file=str(path), line=lineno) from None
        except (ValueError, RecursionError) as e:  # a number past int's digit limit; absurd nesting
            raise TaskfitError(f"malformed JSON ({type(e).__name__}: {str(e)[:200]})", file=str(path),
                               line=lineno) from None
        if not isinstance(row, dict):
            raise TaskfitError(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=lineno)
        rows.append((lineno, row))
    return rows


def _read_text(path: Path) -> str:
    """The file as text; a leading byte-order mark is dropped, bad UTF-8 is reported by line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TaskfitError(f"not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start} ({e.reason}); "
                           "save the file as UTF-8", file=str(path), line=line) from None


def _check_csv_row(row: dict[str | None, Any], n_columns: int, path: Path, line: int) -> None:
    """A row must have one value per header column: DictReader pads short rows with None (which would become
    the text "None") and collects extra values under the key None."""
    if None in row:
        n = n_columns + len(row[None])
    elif None in row.values():
        n = sum(v is not None for v in row.values())
    else:
        return
    raise TaskfitError(f"row has {n} values but the header has {n_columns} columns", file=str(path), line=line)


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
        rows = _nonempty(read_rows(path), path)
        h.update(path.read_bytes())
        examples = [to_example(task, path, n, r) for n, r in rows]
        ratios = c.split or _default_ratios()
        order = list(range(len(examples)))
        random.Random(c.seed).shuffle(order)
        n_train = round(ratios.train * len(order))
        n_dev = round(ratios.dev * len(order))
        for name, idx in (("train", order[:n_train]), ("dev", order[n_train:n_train + n_dev]),
                          ("test", order[n_train + n_dev:])):
            splits[name] = [examples[i] for i in sorted(idx)]
            if getattr(ratios, name) > 0 and not idx:
                raise TaskfitError(f"split {name!r} has ratio {getattr(ratios, name):g} but gets 0 of "
                                   f"{len(examples)} rows; add rows or change `split`", file=str(path),
                                   field="data.split")
    else:
        for name in ("train", "dev", "test"):
            rel = getattr(c, name)
            if rel:
                path = task.resolve(rel)
                rows = _nonempty(read_rows(path), path)
                h.update(name.encode() + path.read_bytes())
                splits[name] = [to_example(task, path, n, r) for n, r in rows]
                if c.shuffle:
                    h.update(b"shuffled")
                    random.Random(f"{c.seed}:{name}").shuffle(splits[name])
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


def _nonempty(rows: list[tuple[int, dict[str, Any]]], path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not rows:
        raise TaskfitError("the data file has no rows", file=str(path))
    return rows


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
