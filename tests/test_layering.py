"""Layering: the task-file schema loads no plugin registry, and tuning does not reach into the runner."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    return set(json.loads(res.stdout.splitlines()[-1]))


def test_the_task_file_schema_imports_no_registry_dataset_or_model_library():
    loaded = _loaded_after("taskfit.taskfile")
    assert not loaded & {"taskfit.backends", "taskfit.strategies", "taskfit.metrics", "taskfit.dataset",
                         "taskfit.prompts", "taskfit.plugins", "taskfit.runner", "torch"}


def test_tuning_does_not_import_the_runner():
    assert "taskfit.runner" not in _loaded_after("taskfit.tuning.tune")


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_tuning_module_reaches_into_the_runner_even_inside_a_function():
    offenders = {str(p.relative_to(ROOT)) for p in (ROOT / "taskfit" / "tuning").rglob("*.py")
                 if any(m == "taskfit.runner" or m.startswith("taskfit.runner.") for m in _imported_modules(p))}
    assert not offenders
