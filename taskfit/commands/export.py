"""`taskfit export mlflow`, and the `--track` option that `run`, `eval`, `tune` and `optimize` share: the
history of a task's studies in an experiment tracker (docs/tracking.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from taskfit.commands import workspace
from taskfit.errors import TaskfitError
from taskfit.terminal import console

if TYPE_CHECKING:
    from taskfit.tracking.mlflow import MlflowTracker, TaskExport

err = console(stderr=True)

TrackingUriOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI: a server (http://host:5000) or sqlite:///mlflow.db "
    "(default: $MLFLOW_TRACKING_URI, else MLflow's default local store).")]
TrackOpt = Annotated[str | None, typer.Option(
    "--track", help="Export each leaderboard row to an experiment tracker as it finishes: mlflow "
    "(docs/tracking.md; needs `pip install 'taskfit[mlflow]'`).")]


def start_tracking(track: str | None, tracking_uri: str | None) -> MlflowTracker | None:
    """The tracker ``--track`` names, connected before any model runs; None without ``--track``."""
    if track is None:
        if tracking_uri:
            raise TaskfitError("--tracking-uri is where --track sends runs: add --track mlflow")
        return None
    from taskfit.tracking import open_tracker

    return open_tracker(track, workspace(), tracking_uri=tracking_uri)


def end_tracking(tracker: MlflowTracker | None) -> None:
    """Say where the rows went, or why they did not (the runs are stored either way)."""
    if tracker is None:
        return
    if tracker.error:
        raise TaskfitError(f"exporting to MLflow at {tracker.tracking_uri} failed ({tracker.error}); the runs "
                           "are stored: `taskfit export mlflow TASK` sends them")
    say(tracker.exports)


def say(exports: list[TaskExport]) -> None:
    """One line per task: how many rows went where."""
    for done in exports:
        err.print(f"mlflow: {done.summary()}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `export mlflow` to the `taskfit` app."""
    export = typer.Typer(no_args_is_help=True, help="Send stored runs to an experiment tracker.")
    app.add_typer(export, name="export")

    @export.command("mlflow")
    def mlflow_(
        targets: Annotated[list[str] | None, typer.Argument(
            help="Task files, task names or run ids (default: the latest study).")] = None,
        tracking_uri: TrackingUriOpt = None,
    ) -> None:
        """Export runs to MLflow: an experiment per task, a parent run per study with the HTML report, a
        nested run per leaderboard row (params, metrics, predictions table). Exporting again updates them."""
        from taskfit import api

        say(api.export_mlflow(targets or [], tracking_uri=tracking_uri, workspace=workspace()))
