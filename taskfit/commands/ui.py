"""`taskfit ui`: serve the review web app (runs, leaderboard, traces, diffs, labels, review queue)."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from taskfit.errors import TaskfitError
from taskfit.netguard import is_loopback


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def ui(
        host: Annotated[
            str, typer.Option(help="Address to bind; anything but loopback needs --token.")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
        token: Annotated[
            str | None,
            typer.Option(
                envvar="TASKFIT_UI_TOKEN",
                help="Require this token on every request (`generate` makes one); "
                "also read from $TASKFIT_UI_TOKEN.",
            ),
        ] = None,
        allow_host: Annotated[
            list[str] | None,
            typer.Option(
                "--allow-host",
                help="Also accept requests for this host name (repeatable); without a token only "
                "loopback names are accepted.",
            ),
        ] = None,
    ) -> None:
        """Serve the review web app: runs, leaderboard, traces, diffs, human labels and the review queue."""
        import uvicorn

        from taskfit.commands import workspace
        from taskfit.terminal import console
        from taskfit.ui.app import create_app

        if token == "generate":
            token = secrets.token_urlsafe(24)
        if not is_loopback(host) and not token:
            raise TaskfitError(
                f"--host {host}: other machines could reach the review app; pass --token T "
                "(or --token generate) to require a token, or bind 127.0.0.1"
            )
        ws = workspace()
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
        console(stderr=True, markup=True).print(
            f"taskfit ui on {url} (database {ws.describe()}); Ctrl-C stops it", highlight=False
        )
        uvicorn.run(create_app(ws, token=token, allowed_hosts=allow_host or ()), host=host, port=port,
                    log_level="warning")
