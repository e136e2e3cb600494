"""CLI commands beyond the core ones in ``taskfit.cli``: one module per command family.

Each module exposes ``register(app)``, which adds its commands to the Typer app; ``taskfit.cli`` calls it
for every module listed in ``COMMANDS``. (Modules get the app passed in rather than importing
``taskfit.cli``, which also runs as ``python -m taskfit.cli``.) Print with ``taskfit.terminal.console()``,
which never sends control characters from model output or data to the terminal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskfit.workspace import Workspace

COMMANDS = ["tune", "optimize", "serve", "report", "ui", "distill", "curve", "init", "shrink", "gate", "export",
            "merge_stores"]

_invocation: dict[str, Any] = {}  # this invocation's --db and its workspace, set by the root callback


def use_database(url: str | None) -> None:
    """Start an invocation: ``--db URL`` (or ``$TASKFIT_DB``) chooses the database; none: the home folder's."""
    old = _invocation.pop("workspace", None)
    if old is not None:
        old.close()
    _invocation["url"] = url


def workspace() -> Workspace:
    """The invocation's workspace: folder ``$TASKFIT_HOME`` (default ``./.taskfit``), database ``--db`` if given."""
    from taskfit.workspace import Workspace

    if "workspace" not in _invocation:
        ws = Workspace.default()
        url = _invocation.get("url")
        _invocation["workspace"] = Workspace.open(ws.root, url=url) if url else ws
    return _invocation["workspace"]
