"""User-facing errors that name the file, line and field at fault."""

from __future__ import annotations


class TaskfitError(Exception):
    """An error caused by the user's task file, data or configuration.

    The CLI prints these without a traceback and exits non-zero.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(f"{where}{message}")


class ModelCallError(Exception):
    """A model call failed after its retries (timeout, HTTP error, ...). Recorded, not fatal."""
