"""What a stored result is reproducible from besides its config and data: Python and package versions, and
the git commit of the task's folder. Runs, tunes and optimizations record it."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_versions(where: Path | None = None) -> dict[str, str]:
    """Python and package versions, plus the git commit of the task's folder when it is in a repository."""
    out = {"python": platform.python_version()}
    if where is not None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
            if commit.returncode == 0:
                out["git_commit"] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    for pkg in ("taskfit", "torch", "transformers", "sentence-transformers", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
