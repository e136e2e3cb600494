"""`taskfit check`, `taskfit diff` and `taskfit baseline` on the scripted model: exit codes, flips, the call
cache, the Markdown summary and the JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import write_jsonl
from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.compare import ExampleResult, RowResults, compare
from taskfit.gate import Criteria, failures, judge, junit, markdown
from taskfit.terminal import safe_text as printable

N = 15  # examples per class: enough for McNemar to call 15 flips significant


def gate_task(folder: Path, instruction: str = "Classify the review.", description: str = "sentiment") -> Path:
    """A sentiment task on the scripted model: right on every row unless the instruction says "Opposite"."""
    rows = [{"id": f"p{i}", "text": f"a great film number {i}", "label": "positive"} for i in range(N)]
    rows += [{"id": f"n{i}", "text": f"a terrible film number {i}", "label": "negative"} for i in range(N)]
    write_jsonl(folder / "data" / "test.jsonl", rows)
    config = {
        "name": "gate", "description": description, "data": {"test": "data/test.jsonl"},
        "inputs": ["text"], "output": "label", "labels": ["negative", "positive"], "metrics": ["accuracy"],
        "prompt": {"instruction": instruction, "input_template": "Review: {{ text }}"},
        "strategies": ["zero_shot"],
        "models": [{"backend": "scripted", "name": "fake", "script": {
            "scores": {"Opposite": {"positive": -3.0, "negative": -0.1},  # first match wins: the edit that hurts
                       "great": {"positive": -0.1, "negative": -3.0},
                       "terrible": {"positive": -3.0, "negative": -0.2}},
            "call_log": str(folder / "calls.log")}}],
    }
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def calls(folder: Path) -> int:
    log = folder / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def saved_baseline(task: Path, out: Path) -> Path:
    res = cli("eval", task, "--json", "--per-example")
    assert res.exit_code == 0, res.output
    out.write_text(res.stdout[res.stdout.index("[\n"):])
    return out


def test_check_passes_an_unchanged_task_with_no_model_call_and_fails_a_prompt_that_hurts(tmp_path, taskfit_home):
    task = gate_task(tmp_path)
    baseline = saved_baseline(task, tmp_path / "baseline.json")
    rows = json.loads(baseline.read_text())
    assert rows[0]["split"] == "test" and len(rows[0]["examples"]) == 2 * N and rows[0]["binary"] is True
    sent = calls(tmp_path)
    assert sent > 0

    # an edit that changes no prompt: answered from the call cache, no model call, exit 0
    gate_task(tmp_path, description="sentiment of film reviews")
    md, xml = tmp_path / "check.md", tmp_path / "reports" / "check.xml"  # a folder that does not exist yet
    res = cli("check", task, "--baseline", baseline, "--markdown", md, "--junit", xml)
    assert res.exit_code == 0, res.output
    assert calls(tmp_path) == sent
    assert "PASS" in res.stdout and "0 right -> wrong" in res.stdout
    assert md.read_text().startswith("## taskfit check: passed")
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["zero_shot x fake"]
    assert suite.find("testcase/failure") is None

    # an edit that inverts the answers: every positive review flips, McNemar p < 0.05, exit 1
    gate_task(tmp_path, instruction="Opposite day: classify the review.")
    res = cli("check", task, "--baseline", baseline, "--markdown", md, "--junit", xml)
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.stdout and f"{N} right -> wrong" in res.stdout and "significantly worse" in res.stdout
    assert "p0" in res.stdout and "a great film number 0" in res.stdout  # the flips, with their inputs
    assert f"... {N - 10} more (--flips)" in res.stdout
    text = md.read_text()
    assert text.startswith("## taskfit check: failed (1 of 1 rows)")
    assert f"### zero\\_shot x fake: right -> wrong ({N})" in text
    assert "| p0 | a great film number 0 | positive | positive | negative |" in text
    case = ET.parse(xml).getroot().find("testsuite/testcase")
    failure = case.find("failure")
    assert failure is not None and "significantly worse" in failure.get("message")
    assert "right -> wrong: p0" in failure.text


def test_a_named_baseline_in_the_store_is_the_default_and_can_be_listed_and_removed(tmp_path, taskfit_home):
    task = gate_task(tmp_path)
    res = cli("eval", task, "--json")
    run_id = json.loads(res.stdout[res.stdout.index("[\n"):])[0]["run_id"]
    assert cli("check", task).exit_code == 2  # no baseline named after the task yet
    res = cli("baseline", "set", "gate", run_id[:6])
    assert res.exit_code == 0 and run_id in res.stdout
    listed = cli("baseline", "list")
    assert "gate" in listed.stdout and "zero_shot x fake" in listed.stdout
    sent = calls(tmp_path)
    res = cli("check", task)  # --baseline defaults to the task's name
    assert res.exit_code == 0, res.output
    assert "(baseline gate)" in res.stdout and calls(tmp_path) == sent
    exported = tmp_path / "exported.json"
    assert cli("baseline", "export", "gate", "-o", exported).exit_code == 0
    assert [e["id"] for e in json.loads(exported.read_text())[0]["examples"]][:2] == ["p0", "p1"]
    gate_task(tmp_path, instruction="Opposite day: classify the review.")
    assert cli("check", task, "--baseline", exported).exit_code == 1
    assert cli("check", task, "--baseline", "gate").exit_code == 1
    assert cli("baseline", "rm", "gate").exit_code == 0
    assert "gate" not in cli("baseline", "list").stdout


def test_the_gate_criteria_fail_a_row_that_is_not_significantly_worse(tmp_path, taskfit_home):
    task = gate_task(tmp_path)
    baseline = saved_baseline(task, tmp_path / "baseline.json")
    for option, value in (("--min-score", "1.01"), ("--max-cost-per-1k", "-1"), ("--margin", "0")):
        res = cli("check", task, "--baseline", baseline, option, value)
        assert res.exit_code == 1, (option, res.output)
    assert cli("check", task, "--baseline", baseline, "--min-score", "0.9", "--margin", "0.02",
               "--max-parse-fail", "0").exit_code == 0


def test_usage_errors_exit_2_with_a_message_naming_the_problem(tmp_path, taskfit_home):
    task = gate_task(tmp_path)
    baseline = saved_baseline(task, tmp_path / "baseline.json")
    res = cli("check", task, "--baseline", "no-such-thing")
    assert res.exit_code == 2 and "neither a file, a baseline" in res.output
    other = json.loads(baseline.read_text())
    for e in other[0]["examples"]:
        e["id"] = "other-" + e["id"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    res = cli("check", task, "--baseline", tmp_path / "other.json")
    assert res.exit_code == 2 and "share no example ids" in res.output
    del other[0]["examples"]
    (tmp_path / "bare.json").write_text(json.dumps(other))
    res = cli("check", task, "--baseline", tmp_path / "bare.json")
    assert res.exit_code == 2 and "bare.json: row 0: field 'examples' is missing" in res.output
    (tmp_path / "broken.json").write_text('[\n{"strategy": \n')
    res = cli("check", task, "--baseline", tmp_path / "broken.json")
    assert res.exit_code == 2 and "broken.json:3: not valid JSON" in res.output
    assert cli("check", task, "--baseline", baseline, "--margin", "x").exit_code == 2


def row(scores: list[float], answers: list[str] | None = None, ids: list[str] | None = None, **kw) -> RowResults:
    ids = ids or [f"e{i}" for i in range(len(scores))]
    answers = answers or ["yes" if s else "no" for s in scores]
    return RowResults(strategy=kw.pop("strategy", "zero_shot"), model="m", source="test", examples=[
        ExampleResult(id=i, score=s, answer=a, target="yes", inputs={"q": f"question {i}"})
        for i, s, a in zip(ids, scores, answers, strict=True)], **kw)


def test_compare_pairs_by_id_lists_flips_and_warns_when_examples_differ():
    base = row([1, 1, 0, 0, 1], ids=["a", "b", "c", "d", "e"])
    cand = row([0, 1, 1, 0], ids=["b", "a", "c", "x"])  # b: right -> wrong, c: wrong -> right
    c = compare(base, cand)
    assert (c.n, c.only_baseline, c.only_candidate) == (3, 2, 1)
    assert [f.example_id for f in c.worse] == ["b"] and [f.example_id for f in c.better] == ["c"]
    assert c.baseline_score == pytest.approx(2 / 3) and c.candidate_score == pytest.approx(2 / 3)
    assert c.test == "McNemar" and c.p == 1.0
    assert "2 examples only in the baseline and 1 only in the candidate" in c.coverage_warning()
    result = judge([base], [cand], Criteria())
    assert result.passed and result.warnings == [c.coverage_warning()]


def test_graded_scores_use_the_paired_bootstrap_and_the_margin_reads_the_lower_bound():
    base = row([0.9] * 30, binary=False)
    worse = row([0.8] * 30, binary=False)
    c = compare(base, worse)
    assert c.test == "paired bootstrap" and c.difference == pytest.approx(-0.1) and c.p < 0.05
    assert c.ci_low == pytest.approx(-0.1) and c.ci_high == pytest.approx(-0.1)
    assert any("significantly worse" in f for f in failures(c, Criteria()))
    same = compare(base, row([0.9] * 30, binary=False))
    assert failures(same, Criteria(margin=0.02)) == []
    assert failures(same, Criteria(margin=0.0)) != []  # a zero margin needs the bound strictly above 0


def test_two_rows_are_matched_by_strategy_x_model_and_a_missing_row_is_named():
    from taskfit.errors import TaskfitError

    base = [row([1, 0]), row([1, 1], strategy="few_shot")]
    result = judge(base, [row([1, 1], strategy="few_shot"), row([1, 0])], Criteria())
    assert [r.name for r in result.rows] == ["zero_shot x m", "few_shot x m"]
    with pytest.raises(TaskfitError, match="no candidate row for the baseline's few_shot x m"):
        judge(base, [row([1, 0]), row([1, 0], strategy="cot")], Criteria())


def test_model_text_is_escaped_in_the_terminal_markdown_and_xml(tmp_path, taskfit_home):
    evil = "neg\x1b[31mRED\x07 | **bold** <b>"
    base, cand = row([1, 1], answers=["yes", "yes"]), row([0, 1], answers=[evil, "yes"])
    for name, r in (("a.json", base), ("b.json", cand)):
        (tmp_path / name).write_text(json.dumps([{"strategy": r.strategy, "model": r.model,
                                                  **r.per_example_json()}]))
    res = cli("diff", tmp_path / "a.json", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout and "\\x1b[31mRED\\x07" in res.stdout
    lines = res.stdout.splitlines()
    assert lines[0].startswith("zero_shot x m 1.000 -> zero_shot x m 0.500: difference -0.500")
    assert lines[1].startswith("right -> wrong (1)") and "question e0" in lines[2] and "gold: yes" in lines[3]
    result = judge([base], [cand], Criteria(min_score=1))
    md = markdown(result)
    assert "\x1b" not in md and "neg\\\\x1b\\[31mRED\\\\x07 \\| \\*\\*bold\\*\\* \\<b\\>" in md
    xml = junit(result)
    assert "\x1b" not in xml and ET.fromstring(xml).find("testsuite/testcase/failure") is not None
    assert printable("a\nb\tc\rd") == "a\nb\tc\\x0dd"


def test_diff_json_has_the_documented_keys(tmp_path, taskfit_home):
    import re

    task = gate_task(tmp_path)
    a = saved_baseline(task, tmp_path / "a.json")
    gate_task(tmp_path, instruction="Opposite day: classify the review.")
    b = saved_baseline(task, tmp_path / "b.json")
    res = cli("diff", a, b, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
    section = doc[doc.index("## `taskfit diff --json`"):]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert list(out) == documented
    assert len(out["worse"]) == N and out["better"] == [] and out["test"] == "McNemar"
    assert set(out["worse"][0]) == {"example_id", "inputs", "target", "baseline_answer", "candidate_answer",
                                    "baseline_score", "candidate_score"}


def test_named_baselines_are_kept_in_the_database_one_run_per_row(store_workspace, make_task):
    from taskfit import api
    from taskfit.baselines import resolve, set_baseline
    from taskfit.errors import TaskfitError

    board = api.evaluate(make_task(), workspace=store_workspace)
    ids = sorted(r.run_id for r in board)
    b = set_baseline(store_workspace, "main", [i[:5] for i in ids])  # prefixes resolve to full ids
    assert b.run_ids == ids and store_workspace.baselines.get("main").run_ids == ids
    assert [x.name for x in store_workspace.baselines.list()] == ["main"]
    assert sorted(r.name for r in resolve("main", store_workspace)) == ["few_shot_balanced x fake", "zero_shot x fake"]
    set_baseline(store_workspace, "main", ids[:1])  # set replaces
    assert store_workspace.baselines.get("main").run_ids == ids[:1]
    # another run of the same row (a changed description makes a new run identity)
    again = api.evaluate(make_task(description="sentiment, again"), strategies=["zero_shot"],
                         workspace=store_workspace)
    with pytest.raises(TaskfitError, match="both zero_shot x fake"):
        set_baseline(store_workspace, "two", [board.rows[0].run_id if board.rows[0].strategy == "zero_shot"
                                               else board.rows[1].run_id, again.rows[0].run_id])
    assert store_workspace.baselines.remove("main") and not store_workspace.baselines.remove("main")
    assert store_workspace.baselines.list() == []


def test_the_python_api_returns_typed_results(tmp_path, workspace):
    import taskfit

    task = gate_task(tmp_path)
    run_id = taskfit.evaluate(task, workspace=workspace).rows[0].run_id
    result = taskfit.check(task, run_id, workspace=workspace, criteria=Criteria(margin=0.05))
    assert result.passed and result.exit_code == 0 and result.rows[0].comparison.n == 2 * N
    gate_task(tmp_path, instruction="Opposite day: classify the review.")
    worse = taskfit.check(task, run_id, workspace=workspace)
    assert worse.exit_code == 1 and len(worse.rows[0].comparison.worse) == N
    c = taskfit.diff(run_id, worse.rows[0].comparison.candidate.run_id, workspace=workspace)
    assert c.difference == pytest.approx(-0.5) and c.test == "McNemar"


def test_parse_failures_and_cost_over_their_limits_fail_the_row():
    base = row([1, 1, 0])
    cand = row([1, 1, 0], parse_fail_rate=0.10, cost_per_1k=0.50)
    c = compare(base, cand)
    assert failures(c, Criteria(max_parse_fail=0.10, max_cost_per_1k=0.50)) == []
    assert failures(c, Criteria(max_parse_fail=0.05, max_cost_per_1k=0.25)) == [
        "parse failures 10.0% exceed 5.0%", "cost $0.5000 per 1k queries exceeds $0.25"]
    assert failures(c, Criteria(min_score=0.7)) == ["score 0.667 is below the floor 0.7"]
