"""Experiment trackers: a study's leaderboard rows, predictions and report, sent to a team's tracker.

One module per tracker (``taskfit.tracking.mlflow``); each imports its client library only when it is used,
so importing taskfit, or any command that tracks nothing, never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskfit.errors import TaskfitError

if TYPE_CHECKING:
    from taskfit.tracking.mlflow import MlflowTracker
    from taskfit.workspace import Workspace

TRACKERS = ("mlflow",)


def open_tracker(name: str, workspace: Workspace, *, tracking_uri: str | None = None) -> MlflowTracker:
    """The tracker called ``name``, connected (``tracking_uri``: the tracker's own default when None)."""
    if name not in TRACKERS:
        raise TaskfitError(f"--track {name!r}: unknown tracker (choose from {', '.join(TRACKERS)})")
    from taskfit.tracking.mlflow import MlflowTracker

    return MlflowTracker(workspace, tracking_uri=tracking_uri)
