"""The docs are executed: the task-file reference is current and the README's commands run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_taskfile_reference_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "scripts/gen_taskfile_doc.py"), "--check"], cwd=ROOT)
    assert res.returncode == 0, "docs/taskfile.md is stale: run python scripts/gen_taskfile_doc.py"


def test_every_example_task_file_loads():
    from taskfit.study import prepare

    tasks = sorted(ROOT.glob("examples/*/task.yaml"))
    assert len(tasks) >= 3
    for path in tasks:
        task, ds = prepare(path)
        assert ds.split(task.config.split)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("taskfit ")]


@pytest.mark.slow  # runs the real bundled models (the README's commands train and evaluate them)
def test_readme_taskfit_commands_run(tmp_path):
    """Each `taskfit ...` line of the README, on a scripted model where it names a model-backed run."""
    commands = _readme_commands()
    assert any(c.startswith("taskfit run") for c in commands) and any("--json" in c for c in commands)
    env = {**os.environ, "TASKFIT_HOME": str(tmp_path)}
    run_id = None
    for cmd in commands:
        args = cmd.split()[1:]
        if args[0] in ("run", "eval"):
            args += ["--limit", "4"]
            if args[0] == "run":  # the tuned models on a few rows: the path runs, the numbers don't matter
                args += ["--train-limit", "16"]
            if args[0] == "eval":
                args += ["--strategy", "zero_shot"]
        args = [run_id if a == "RUN" else a for a in args]
        res = subprocess.run([sys.executable, "-m", "taskfit.cli", *args], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=900)
        assert res.returncode == 0, f"{cmd}: {res.stderr[-2000:]}"
        if args[0] == "eval" and "--json" in args:
            import json

            run_id = json.loads(res.stdout)[0]["run_id"]
