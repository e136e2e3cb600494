"""What a team compares against: named baselines (runs kept in the workspace's database, so a shared PostgreSQL
store makes them team-wide), saved per-example files, and ``resolve`` from a reference to rows.

A reference is, tried in this order: a saved file (``taskfit eval ... --json --per-example`` or ``taskfit
baseline export``), a baseline name, or a run id (or unique prefix).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from taskfit.compare import RowResults, run_results
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows as leaderboard_rows

if TYPE_CHECKING:
    from taskfit.store import RunRecord
    from taskfit.workspace import Workspace


@dataclass(frozen=True)
class Baseline:
    """A named set of runs, one per strategy x model row."""

    name: str
    run_ids: list[str]
    created: float


class BaselineStore:
    def __init__(self, eng: Engine):
        self.eng = eng

    def set(self, name: str, run_ids: list[str]) -> Baseline:
        """Name ``run_ids`` (full ids), replacing what the name held before."""
        now = time.time()
        with self.eng.begin() as conn:  # one transaction: a reader sees the old set or the new one
            conn.execute(text("DELETE FROM baselines WHERE name = :n"), {"n": name})
            conn.execute(text("INSERT INTO baselines (name, run_id, created) VALUES (:n, :r, :t)"),
                         [{"n": name, "r": r, "t": now} for r in dict.fromkeys(run_ids)])
        return Baseline(name, list(dict.fromkeys(run_ids)), now)

    def get(self, name: str) -> Baseline | None:
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT run_id, created FROM baselines WHERE name = :n ORDER BY run_id"),
                                {"n": name}).all()
        return Baseline(name, [r[0] for r in rows], rows[0][1]) if rows else None

    def list(self) -> list[Baseline]:
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT name, run_id, created FROM baselines ORDER BY name, run_id")).all()
        out: dict[str, Baseline] = {}
        for name, run_id, created in rows:
            out.setdefault(name, Baseline(name, [], created)).run_ids.append(run_id)
        return list(out.values())

    def remove(self, name: str) -> bool:
        """Forget ``name``; False when there was no such baseline."""
        with self.eng.begin() as conn:
            return conn.execute(text("DELETE FROM baselines WHERE name = :n"), {"n": name}).rowcount > 0


def find_run(workspace: Workspace, run_id: str) -> RunRecord:
    """A finished run by id or unique prefix, or a clear error."""
    run = workspace.runs.get(run_id)
    if run is None:
        raise TaskfitError(f"no run (or more than one) matches {run_id!r}; see `taskfit runs`")
    if run.status != "done":
        raise TaskfitError(f"run {run.id} is not finished ({run.status}): run its command again to complete it")
    return run


def set_baseline(workspace: Workspace, name: str, run_ids: list[str]) -> Baseline:
    """Name the runs ``run_ids`` (ids or prefixes); two runs of the same strategy x model row are an error."""
    runs = [find_run(workspace, r) for r in run_ids]
    seen: dict[str, str] = {}
    for r in runs:
        row = f"{r.strategy} x {r.model}"
        if seen.setdefault(row, r.id) != r.id:
            raise TaskfitError(f"runs {seen[row]} and {r.id} are both {row}: a baseline holds one run per row")
    return workspace.baselines.set(name, [r.id for r in runs])


def resolve(ref: str, workspace: Workspace) -> list[RowResults]:
    """The rows a reference names: a saved file, a baseline name, or a run id."""
    path = Path(ref)
    if path.is_file():
        return read_file(path)
    named = workspace.baselines.get(ref)
    if named is not None:
        return [run_results(workspace, find_run(workspace, r)) for r in named.run_ids]
    if workspace.runs.get(ref) is None:
        raise TaskfitError(f"{ref!r} is neither a file, a baseline (`taskfit baseline list`) nor a run id "
                           "(`taskfit runs`)")
    return [run_results(workspace, find_run(workspace, ref))]


def read_file(path: Path) -> list[RowResults]:
    """The rows of a saved ``--json --per-example`` file (a JSON list of rows, or one row)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TaskfitError(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno) from None
    rows = data if isinstance(data, list) else [data]
    if not rows:
        raise TaskfitError("no rows in the file", file=str(path))
    return [RowResults.from_json(r, f"{path}: row {i}") for i, r in enumerate(rows)]


def saved_rows(workspace: Workspace, runs: list[RunRecord]) -> list[dict[str, Any]]:
    """The ``--json --per-example`` rows of ``runs``: the leaderboard's row objects, best first, each with its
    per-example results (what ``taskfit check`` needs without the store)."""
    by_id = {r.id: r for r in runs}
    return [{**row.to_json(), **run_results(workspace, by_id[row.run_id]).per_example_json()}
            for row in leaderboard_rows(workspace, runs)]
