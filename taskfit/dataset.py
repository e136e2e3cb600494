"""Rows of a task: read JSONL/CSV, check the declared fields, split, and fingerprint the data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
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
        _check_quotes_close(text, path)
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


def _check_quotes_close(text: str, path: Path) -> None:
    """A quoted CSV value that never closes swallows every later line into one value; the csv module then
    reports a short row, far from the cause. Name the quote instead."""
    if text.count('"') % 2 == 0:  # each closed quoted value holds an even number of quote characters
        return
    line, col, opened, field_start, quoted, i = 1, 1, (0, 0), True, False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == '"':
            if text.startswith('""', i):  # an escaped quote inside the value
                i, col = i + 1, col + 1
            else:
                quoted = False
        elif not quoted and ch == '"' and field_start:  # like the csv module, a quote opens only a value
            quoted, opened = True, (line, col)
        field_start = not quoted and ch in ",\r\n"
        if ch == "\n" or (ch == "\r" and not text.startswith("\r\n", i)):
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    if quoted:
        raise TaskfitError(f"unterminated quote: the quoted value that starts at column {opened[1]} never closes "
                           "(every later line became part of it); close it with \" or double a quote inside it "
                           "as \"\"", file=str(path), line=opened[0])


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


class MissingValue(TaskfitError):
    """A row without a value the task needs (its output, or an input field); ``data.on_missing: skip`` drops
    such rows instead of stopping."""


def to_example(task: Task, path: Path, lineno: int, row: dict[str, Any]) -> Example:
    """The row as an example; raises MissingValue, naming the file, line and field, for an absent or null
    input or output (and an empty output), so that no prompt shows "None" and no answer is scored against it."""
    c = task.config
    check_inputs(task, path, lineno, row)
    for name in [c.output] + ([c.aliases] if c.aliases else []):
        if name not in row:
            raise MissingValue(f"missing field {name!r} (row has: {', '.join(row) or 'nothing'})",
                               file=str(path), line=lineno, field=name)
    if _is_null(row[c.output]) or not _as_text(row[c.output]).strip():
        raise MissingValue(f"output field {c.output!r} is {_null_name(row[c.output])}: every row needs the "
                           "expected answer (`data.on_missing: skip` leaves such rows out)", file=str(path),
                           line=lineno, field=c.output)
    target = _as_text(row[c.output])
    answers = [target]
    if c.aliases:
        extra = row[c.aliases]
        if not isinstance(extra, list):
            raise TaskfitError(f"field {c.aliases!r} must be a list of accepted answers", file=str(path),
                               line=lineno, field=c.aliases)
        if any(_is_null(a) for a in extra):
            raise MissingValue(f"field {c.aliases!r} holds a null answer", file=str(path), line=lineno,
                               field=c.aliases)
        answers += [_as_text(a) for a in extra if _as_text(a) not in answers]
    if c.labels and target not in c.labels:
        raise TaskfitError(f"{c.output}={target!r} is not one of the task's labels {c.labels}",
                           file=str(path), line=lineno, field=c.output)
    return Example(id=row_id(task, path, lineno, row), fields=row, target=target, answers=tuple(answers), source=f"{path}:{lineno}")


def check_inputs(task: Task, path: Path, lineno: int, row: dict[str, Any]) -> None:
    """Raise MissingValue for an input field that is absent, null or NaN."""
    for name in task.config.inputs:
        if name not in row:
            raise MissingValue(f"missing field {name!r} (row has: {', '.join(row) or 'nothing'})",
                               file=str(path), line=lineno, field=name)
        if _is_null(row[name]):
            raise MissingValue(f"input field {name!r} is {_null_name(row[name])}", file=str(path), line=lineno,
                               field=name)


def row_id(task: Task, path: Path, lineno: int, row: dict[str, Any]) -> str:
    """The row's id field, or file stem and line when it has none (or a null one)."""
    given = row.get(task.config.data.id_field)
    return f"{path.stem}-{lineno}" if _is_null(given) else str(given)


def _is_null(v: Any) -> bool:
    """JSON null, or NaN (JSON ``NaN``): Python would print either as text ("None", "nan")."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _null_name(v: Any) -> str:
    return "null" if v is None else "NaN" if _is_null(v) else "empty"


def _as_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)


def examples(task: Task, path: Path, rows: list[tuple[int, dict[str, Any]]], skipped: list[MissingValue]
             ) -> list[Example]:
    """``rows`` as examples; with ``data.on_missing: skip`` a row missing a value is left out and its error
    appended to ``skipped``."""
    out = []
    for lineno, row in rows:
        try:
            out.append(to_example(task, path, lineno, row))
        except MissingValue as e:
            if task.config.data.on_missing != "skip":
                raise
            skipped.append(e)
    if rows and not out:
        raise TaskfitError(f"every row misses a value (the first: {skipped[0]})", file=str(path))
    return out


class Dataset:
    """The task's splits, loaded once. ``hash`` fingerprints every row of every split."""

    def __init__(self, splits: dict[str, list[Example]], digest: str, skipped: list[MissingValue] | None = None):
        self.splits = splits
        self.hash = digest
        self.skipped = skipped or []  # rows left out under data.on_missing: skip, each with why

    def skipped_note(self) -> str:
        """One line saying how many rows were left out for a missing value, and the first; "" when none."""
        if not self.skipped:
            return ""
        n, first = len(self.skipped), self.skipped[0]
        return (f"skipped {n} row{'s' if n != 1 else ''} with a missing value (data.on_missing: skip); first: "
                f"{first.file}:{first.line}, field {first.field!r}")

    def require(self, names: set[str], *, skip: bool = False) -> None:
        """Raise MissingValue for an example whose field in ``names`` is absent, null or NaN (fields a template
        shows beyond the declared inputs); with ``skip``, leave such examples out and count them instead."""
        for split, exs in self.splits.items():
            kept = []
            for ex in exs:
                name = next((n for n in sorted(names) if _is_null(ex.fields.get(n))), None)
                if name is None:
                    kept.append(ex)
                    continue
                file, _, line = ex.source.rpartition(":")
                e = MissingValue(f"field {name!r}, which a template shows, is "
                                 f"{_null_name(ex.fields[name]) if name in ex.fields else 'absent'}",
                                 file=file, line=int(line), field=name)
                if not skip:
                    raise e
                self.skipped.append(e)
            self.splits[split] = kept

    def split(self, name: str) -> list[Example]:
        if name not in self.splits or not self.splits[name]:
            have = [k for k, v in self.splits.items() if v]
            raise TaskfitError(f"the task has no {name!r} split (it has: {', '.join(have) or 'none'})")
        return self.splits[name]


def load_dataset(task: Task) -> Dataset:
    c = task.config.data
    h = hashlib.sha256()
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    skipped: list[MissingValue] = []
    if c.file:
        path = task.resolve(c.file)
        rows = _nonempty(read_rows(path), path)
        h.update(path.read_bytes())
        rows_kept = examples(task, path, rows, skipped)
        ratios = c.split or _default_ratios()
        order = list(range(len(rows_kept)))
        random.Random(c.seed).shuffle(order)
        n_train = round(ratios.train * len(order))
        n_dev = round(ratios.dev * len(order))
        for name, idx in (("train", order[:n_train]), ("dev", order[n_train:n_train + n_dev]),
                          ("test", order[n_train + n_dev:])):
            splits[name] = [rows_kept[i] for i in sorted(idx)]
            if getattr(ratios, name) > 0 and not idx:
                raise TaskfitError(f"split {name!r} has ratio {getattr(ratios, name):g} but gets 0 of "
                                   f"{len(rows_kept)} rows; add rows or change `split`", file=str(path),
                                   field="data.split")
    else:
        for name in ("train", "dev", "test"):
            rel = getattr(c, name)
            if rel:
                path = task.resolve(rel)
                rows = _nonempty(read_rows(path), path)
                h.update(name.encode() + path.read_bytes())
                splits[name] = examples(task, path, rows, skipped)
                if c.shuffle:
                    h.update(b"shuffled")
                    random.Random(f"{c.seed}:{name}").shuffle(splits[name])
    _check_unique_ids(splits)
    return Dataset(splits, h.hexdigest()[:16], skipped)


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
    skipped: list[MissingValue] = []
    for split, given in (task.rows or {}).items():
        where = Path(f"{split}-rows")  # errors read "test-rows:3: missing field 'label'"
        for i, row in enumerate(given, start=1):
            if not isinstance(row, dict):
                raise TaskfitError(f"expected a mapping, got {type(row).__name__}", file=str(where), line=i)
        splits[split] = examples(task, where, list(enumerate(given, start=1)), skipped)
        h.update(split.encode() + json.dumps(given, sort_keys=True, default=str).encode())
    _check_unique_ids(splits)
    return Dataset(splits, h.hexdigest()[:16], skipped)
