"""taskfit: run an LLM on your own task and compare prompt strategies (and later fine-tuning) with evidence.

The Python API (see the README's "Python API")::

    import taskfit
    task = taskfit.Task.from_rows(rows, inputs=["text"], output="label", metric=my_metric)
    board = taskfit.evaluate(task, strategies=["zero_shot", "few_shot"])
    print(board)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# names exported here, imported on first use: `import taskfit` (and the command line's start) stays fast
_EXPORTS = {
    "evaluate": "taskfit.api", "tune": "taskfit.api", "optimize": "taskfit.api", "report": "taskfit.api",
    "check": "taskfit.api", "diff": "taskfit.api", "export_mlflow": "taskfit.api",
    "Leaderboard": "taskfit.api", "Task": "taskfit.taskfile", "Workspace": "taskfit.workspace",
    "LeaderboardRow": "taskfit.types", "PredictionRow": "taskfit.types", "TaskfitError": "taskfit.errors",
}
__all__ = ["Leaderboard", "LeaderboardRow", "PredictionRow", "Task", "TaskfitError", "Workspace", "__version__",
           "check", "diff", "evaluate", "export_mlflow", "optimize", "report", "tune"]

if TYPE_CHECKING:
    from taskfit.api import Leaderboard, check, diff, evaluate, export_mlflow, optimize, report, tune
    from taskfit.errors import TaskfitError
    from taskfit.taskfile import Task
    from taskfit.types import LeaderboardRow, PredictionRow
    from taskfit.workspace import Workspace


class _Package(types.ModuleType):
    """The package module, keeping ``taskfit.report`` and ``taskfit.optimize`` the API functions: importing a
    submodule sets it as an attribute of its package, which would otherwise replace the function with the
    module of the same name (the modules stay importable: ``from taskfit.report import write_report``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'taskfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
