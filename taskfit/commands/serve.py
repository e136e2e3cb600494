"""`taskfit serve`: run one strategy x model arm of a task as an OpenAI-compatible chat server."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from taskfit.errors import TaskfitError
from taskfit.netguard import is_loopback

TOKEN_ENV = "TASKFIT_SERVE_TOKEN"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""

    @app.command()
    def serve(
        run: Annotated[str | None, typer.Option("--run", help="Serve the arm of this stored run (`taskfit runs`).")] = None,
        task: Annotated[str | None, typer.Option("--task", help="Task file (YAML); with --run, overrides the run's "
                                                 "stored path.")] = None,
        strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="Strategy row or registered name.")] = None,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Model row, local folder, .gguf, 'bundled' "
                                                  "or tuned:<run-id>.")] = None,
        host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        token: Annotated[str | None, typer.Option(help=f"Bearer token clients must send (default: ${TOKEN_ENV}).")] = None,
        allow_host: Annotated[list[str] | None, typer.Option(
            "--allow-host", help="Also accept requests for this host name (repeatable); without a token only "
            "loopback names are accepted.")] = None,
    ) -> None:
        """Serve the chosen configuration as an OpenAI-compatible server (chat completions, models, health)."""
        from rich.text import Text

        from taskfit.terminal import console

        token = token or os.environ.get(TOKEN_ENV) or None
        if not is_loopback(host) and not token:
            raise TaskfitError(f"refusing to listen on {host} without a token: anyone who can reach it could use "
                               f"the model. Pass --token (or set {TOKEN_ENV}), or bind to 127.0.0.1")
        if run is None and task is None:
            raise TaskfitError("give --run RUN, or --task TASK --strategy S --model M")
        import uvicorn

        from taskfit.commands import workspace
        from taskfit.serve.app import create_app
        from taskfit.serve.log import RequestLog
        from taskfit.serve.pipeline import build_pipeline
        from taskfit.serve.server import uvicorn_config

        err = console(stderr=True)  # names are printed as given, never read as markup
        err.print("loading task, data and model...", style="dim")
        ws = workspace()
        pipeline = build_pipeline(ws, run_id=run, task_path=task, strategy=strategy, model=model)
        app_ = create_app(pipeline, token=token, log=RequestLog(ws.engine), allowed_hosts=allow_host or ())
        err.print(Text.assemble("serving ", (pipeline.arm.name, "bold"), f" of {pipeline.task.config.name} as model ",
                                (pipeline.model_name, "bold"), f" on http://{host}:{port}/v1"
                                f"{' (bearer token required)' if token else ''}"), highlight=False)
        uvicorn.Server(uvicorn_config(app_, pipeline.config, host, port, log_level="warning",
                                      timeout_graceful_shutdown=5)).run()
