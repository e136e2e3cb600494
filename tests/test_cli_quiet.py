"""The command line prints the user's results and errors, not the warnings of libraries it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_validate_prints_no_library_warnings(tmp_path):
    # `validate` imports the tuning methods (torch, transformers and, where installed, torchao's kernels)
    res = subprocess.run([sys.executable, "-m", "taskfit", "validate", str(ROOT / "examples/sst2/task.yaml")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "TASKFIT_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok sst2")
    assert res.stderr.strip() == "", res.stderr
