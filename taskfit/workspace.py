"""One workspace: the database engine, the call cache and the stores of runs, tunes, optimizations and baselines.

A workspace is passed explicitly down every path; no library module opens a default database of its own.
Only the command line resolves ``$TASKFIT_HOME`` or ``--db URL`` into a workspace (``Workspace.default()``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine


@dataclass
class Workspace:
    """Where taskfit keeps its state.

    Args:
        root: folder for files (tuned models, reports); the SQLite database lives here unless ``url`` is given.
        url: any SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``); default ``root/taskfit.db``.
    """

    root: Path
    url: str | None = None
    _engine: Engine | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)  # Workspace("dir") as well as Workspace(Path("dir"))

    @classmethod
    def open(cls, location: str | Path | None = None, *, url: str | None = None) -> Workspace:
        """A workspace in folder ``location`` (created on demand), optionally on the database at ``url``."""
        root = Path(location) if location is not None else Path(".taskfit")
        return cls(root=root, url=url)

    @classmethod
    def default(cls) -> Workspace:
        """The command line's workspace: ``$TASKFIT_HOME`` (else ``./.taskfit``), ``$TASKFIT_DB`` for the URL."""
        return cls.open(os.environ.get("TASKFIT_HOME") or ".taskfit", url=os.environ.get("TASKFIT_DB") or None)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from taskfit import db

            self.root.mkdir(parents=True, exist_ok=True)
            self._engine = db.connect(self.url or f"sqlite:///{self.root / 'taskfit.db'}")
        return self._engine

    @cached_property
    def cache(self):
        from taskfit.cache import CallCache

        return CallCache(self.engine)

    @cached_property
    def runs(self):
        from taskfit.store import Store

        return Store(self.engine)

    @cached_property
    def tunes(self):
        from taskfit.tuning.store import TuneStore

        return TuneStore(self.engine, folder=self.root / "tuned")

    @cached_property
    def optimizations(self):
        from taskfit.optimize.store import OptimizationStore

        return OptimizationStore(self.engine)

    @cached_property
    def unit_costs(self):
        from taskfit.calibration import UnitCostStore

        return UnitCostStore(self.engine)

    @cached_property
    def baselines(self):
        from taskfit.baselines import BaselineStore

        return BaselineStore(self.engine)

    def describe(self) -> str:
        """Where the database is, for messages (a URL's password hidden)."""
        if self.url is None:
            return str(self.root / "taskfit.db")
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
