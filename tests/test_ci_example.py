"""examples/ci runs as docs/ci.md says: the committed baseline is current, the workflow's `taskfit check` passes
on the unchanged task with no model call, and a prompt edit that hurts makes it fail."""

from __future__ import annotations

import json
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml
from typer.testing import CliRunner

from taskfit.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ci"


def workflow_check_command() -> list[str]:
    """The workflow's `taskfit check` step, as arguments after `taskfit`."""
    flow = yaml.safe_load((EXAMPLE / "taskfit-check.yml").read_text())
    steps = flow["jobs"]["gate"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == ".taskfit"  # the default workspace: the call cache survives between jobs
    run = next(s["run"] for s in steps if "taskfit check" in s.get("run", ""))
    args = shlex.split(run)
    assert args[0].endswith("taskfit")
    return args[1:]


def test_the_ci_example_runs_as_documented(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLE, tmp_path / "examples" / "ci")
    monkeypatch.chdir(tmp_path)  # the workflow's paths are relative to the repository root
    monkeypatch.delenv("TASKFIT_HOME", raising=False)  # the default ./.taskfit, which the workflow caches
    cli = CliRunner()
    task = Path("examples/ci/task.yaml")

    # the committed baseline is what `taskfit eval --json --per-example` prints today
    res = cli.invoke(app, ["eval", str(task), "--json", "--per-example"])
    assert res.exit_code == 0, res.output
    fresh = json.loads(res.stdout[res.stdout.index("[\n"):])
    committed = json.loads((EXAMPLE / "baseline.json").read_text())
    assert [r["examples"] for r in fresh] == [r["examples"] for r in committed]
    assert fresh[0]["score"] == committed[0]["score"] == 0.95

    # the workflow's gate on the unchanged task: answered from the call cache, exit 0
    from taskfit.workspace import Workspace

    ws = Workspace.open(".taskfit")
    cached, runs = ws.cache.count(), [r.id for r in ws.runs.list(100)]
    check = workflow_check_command()
    res = cli.invoke(app, check)
    assert res.exit_code == 0, res.output
    # no call reached the model: the unchanged configuration is the finished run already stored, reused whole
    assert ws.cache.count() == cached and [r.id for r in ws.runs.list(100)] == runs
    assert Path("taskfit-check.md").read_text().startswith("## taskfit check: passed")

    # a prompt edit that hurts: the scripted model answers "negative" to everything, exit 1
    text = task.read_text().replace("positive or negative?", "positive or negative? Reviews may be sarcastic.")
    task.write_text(text)
    res = cli.invoke(app, check)
    assert res.exit_code == 1, res.output
    assert "right -> wrong" in res.stdout
    assert "failed (1 of 1 rows)" in Path("taskfit-check.md").read_text()
    case = ET.parse("taskfit-check.xml").getroot().find("testsuite/testcase")
    assert case.get("name") == "zero_shot x scripted-sentiment" and case.find("failure") is not None
    ws.close()
