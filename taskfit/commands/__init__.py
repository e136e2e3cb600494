"""CLI commands beyond the core ones in ``taskfit.cli``: one module per command family.

Each module exposes ``register(app)``, which adds its commands to the Typer app; ``taskfit.cli`` calls it
for every module listed in ``COMMANDS``. (Modules get the app passed in rather than importing
``taskfit.cli``, which also runs as ``python -m taskfit.cli``.) Print with ``rich.console.Console()``.
"""

COMMANDS = ["tune", "optimize", "serve", "report", "ui", "curve"]
