"""`taskfit ui`: see the module of the same name in the library."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `taskfit` app."""
