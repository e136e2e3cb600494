"""Layering: the task-file schema loads no plugin registry, tuning does not reach into the runner, and the
report's steps (collecting, plots, HTML) load only what they use."""

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


def test_report_plots_do_not_reach_the_store_and_collecting_does_not_load_the_html():
    plots = _loaded_after("taskfit.report.plots")
    assert "taskfit.report.plots" in plots
    assert not plots & {"taskfit.store", "taskfit.workspace", "taskfit.db", "sqlalchemy", "taskfit.report.data",
                        "taskfit.report.html", "jinja2"}
    data = _loaded_after("taskfit.report.data")
    assert "taskfit.store" in data
    assert not data & {"taskfit.report.html", "taskfit.report.plots", "jinja2"}


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
