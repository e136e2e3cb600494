"""The judge metric: the grading prompt, scored and written verdicts, the metric inside a study, and
calibration (agreement, Cohen's kappa, flip rate) against labels, on the scripted model; one slow test on the
bundled model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from taskfit.backends.scripted import ScriptedBackend
from taskfit.cache import CallCache
from taskfit.dataset import Example
from taskfit.db import connect
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows
from taskfit.lm import LM
from taskfit.metrics import build_metric
from taskfit.metrics.judge import (
    Judge,
    JudgeItem,
    calibrate,
    cohen_kappa,
    items_from_predictions,
    items_from_rows,
    judge_model_for,
    model_spec,
)
from taskfit.taskfile import ModelSpec
from taskfit.types import PredictionRow

ROOT = Path(__file__).resolve().parents[1]


def scripted_judge(script, **kw) -> Judge:
    backend = ScriptedBackend(script)
    cache = CallCache(connect("sqlite://"))  # in memory: these tests read verdicts, not the stored calls
    return Judge(ModelSpec(backend="scripted", script=script), lm=LM(backend, cache), **kw)


def test_prompt_holds_question_reference_candidate_rubric_and_order_swaps_them():
    judge = Judge(model_spec(None), rubric="Units must match.")
    item = JudgeItem("How far is it?", "3 km", reference="3 kilometres")
    system, user, prefill = judge.messages(item)
    text = user["content"]
    assert "Rubric: Units must match." in text and "Question: How far is it?" in text
    assert text.index("Reference answer: 3 kilometres") < text.index("Candidate answer: 3 km")
    assert text.endswith("Reply with one word: correct or incorrect.")
    assert prefill == {"role": "assistant", "content": "Verdict:"}
    swapped = judge.messages(item, order=1)[1]["content"]
    assert swapped.index("Candidate answer") < swapped.index("Reference answer")
    assert swapped.endswith("incorrect or correct.")
    no_ref = judge.messages(JudgeItem("q", "a"))[1]["content"]
    assert "Reference answer" not in no_ref


def test_scored_verdicts_with_confidence_and_calibration():
    # the judge leans to 'correct' (content-free item: correct -1, incorrect -2); item 'A' is a real 'correct'
    script = {
        "scores": {
            "Candidate answer: N/A": {"correct": -1.0, "incorrect": -2.0},
            "Candidate answer: A": {"correct": -0.2, "incorrect": -3.0},
            "Candidate answer: B": {"correct": -0.8, "incorrect": -1.2},
        }
    }
    raw = scripted_judge(script, calibrate=False).grade([JudgeItem("q", "A", "r"), JudgeItem("q", "B", "r")])
    assert [v.score for v in raw] == [1.0, 1.0] and raw[0].confidence > raw[1].confidence > 0.5
    cal = scripted_judge(script).grade([JudgeItem("q", "A", "r"), JudgeItem("q", "B", "r")])
    # B's 0.4 nat lead for 'correct' is less than the judge's 1.0 nat lean: after calibration it is incorrect
    assert [v.score for v in cal] == [1.0, 0.0] and [v.raw for v in cal] == ["correct", "incorrect"]


def test_written_verdicts_are_parsed():
    judge = Judge(model_spec(None))
    assert judge.parse("Verdict: Incorrect. The answer misses the unit.").score == 0.0
    assert judge.parse("correct - it matches").score == 1.0
    assert judge.parse("The candidate is wrong").score == 0.0
    assert judge.parse("I cannot tell").score is None
    five = Judge(model_spec(None), scale=5)
    assert five.parse("Rating: 4/5").score == 0.75 and five.parse("7, no 1").score == 0.0
    gen = scripted_judge(
        {"replies": {"Candidate answer: A": "Correct."}, "default": "incorrect"}, mode="generate"
    )
    assert [v.score for v in gen.grade([JudgeItem("q", "A"), JudgeItem("q", "B")])] == [1.0, 0.0]


def test_options_are_checked():
    with pytest.raises(TaskfitError, match="unknown option 'rubrik'"):
        build_metric("judge", {"rubrik": "x"})
    with pytest.raises(TaskfitError, match="'mode' must be auto, score or generate"):
        build_metric("judge", {"mode": "vote"})
    with pytest.raises(TaskfitError, match="option 'model' is not a valid model"):
        build_metric("judge", {"model": {"backend": "openai", "nope": 1}})
    m = build_metric(
        "judge",
        {"model": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}, "scale": 5},
    )
    assert m.binary is False and m.judge.spec.backend == "openai"  # no model is loaded at creation
    assert build_metric("judge", {}).binary is True


def test_judge_metric_in_a_generative_study(make_task, workspace):
    """The judge as the task's metric: the study's answers graded by a scripted judge, scores stored."""
    from taskfit.runner import evaluate
    from taskfit.study import prepare, select_arms

    judge_model = {
        "backend": "scripted",
        "name": "judge",
        "script": {
            "scores": {
                "Candidate answer: Positive": {"correct": -0.1, "incorrect": -2.0},
                "Candidate answer: negative": {"correct": -0.1, "incorrect": -2.0},
            }
        },
    }
    path = make_task(
        labels=None,
        output_mode="generate",
        strategies=["zero_shot"],
        metrics=[{"judge": {"model": judge_model, "fields": ["text"], "calibrate": False}}, "exact_match"],
    )
    task, ds = prepare(path)
    store = workspace.runs
    runs = evaluate(
        task,
        ds,
        select_arms(task, None, None),
        split="test",
        limit=None,
        workspace=workspace,
    )
    preds = store.predictions(runs[0].id)
    by_answer = {p.answer: p.metrics["judge"] for p in preds}
    # scripted answers: 'Positive' for 'great' (3 rows), 'negative' for 'terrible' (2), 'hmm' otherwise
    assert by_answer == {"Positive": 1.0, "negative": 1.0, "hmm": 0.0}
    (row,) = rows(workspace, runs)
    assert row.metric == "judge" and row.score == pytest.approx(5 / 8)


def test_cohen_kappa_matches_the_textbook_and_sklearn():
    # 2x2 table with 20 agree-yes, 15 agree-no, 5 and 10 disagreements: kappa = 0.4 (Wikipedia example)
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 1], [1, 1]) == 1.0


def test_calibration_figures_against_human_labels():
    # the judge says correct for A and C, incorrect for B and D; with the swapped ordering it flips on C
    script = {
        "scores": {
            "Candidate answer: C\nReference": {
                "correct": -3.0,
                "incorrect": -0.1,
            },  # order 1: candidate first
            "Candidate answer: A": {"correct": -0.1, "incorrect": -3.0},
            "Candidate answer: C": {"correct": -0.1, "incorrect": -3.0},
        },
    }
    judge = scripted_judge(script, calibrate=False)
    items = [JudgeItem("q", x, "ref") for x in "ABCD"]
    cal, verdicts = calibrate(judge, items, [1, 0, 0, 0])
    assert [v.score for v in verdicts] == [1.0, 0.0, 1.0, 0.0]
    assert cal.n == 4 and cal.accuracy == 0.75 and cal.flip_rate == 0.25
    assert cal.kappa == pytest.approx(cohen_kappa([1, 0, 1, 0], [1, 0, 0, 0]))
    assert cal.judge_positive == 0.5 and cal.human_positive == 0.25 and "swapped" in cal.repeat


def test_items_from_rows_and_predictions():
    ex = Example(
        "1",
        {"question": "Why?", "reference_answer": "Because.", "student_answer": "Cause", "label": "correct"},
        target="x",
        source="data.jsonl:3",
    )
    items, labels = items_from_rows(
        [ex],
        inputs=["question", "reference_answer", "student_answer"],
        candidate="student_answer",
        reference="reference_answer",
        human="label",
    )
    assert items == [JudgeItem("Why?", "Cause", "Because.")] and labels == [1]
    with pytest.raises(TaskfitError, match=r"data.jsonl:3: judge-check: row has no field 'verdict'"):
        items_from_rows(
            [ex], inputs=["question"], candidate="student_answer", reference=None, human="verdict"
        )
    preds = [
        PredictionRow(answer="Paris", target="Paris", inputs={"q": "Capital?"}, metrics={"exact_match": 1.0}),
        PredictionRow(answer=None, target="x", inputs={"q": "?"}, metrics={"exact_match": 0.0}),
    ]
    items, labels = items_from_predictions(preds, "exact_match")
    assert items == [JudgeItem("Capital?", "Paris", "Paris")] and labels == [1]


def test_default_judge_is_the_tasks_first_local_model(make_task):
    from taskfit.taskfile import load_task

    task = load_task(
        make_task(
            models=[
                {"backend": "openai", "base_url": "http://x/v1", "model": "m"},
                {"backend": "scripted", "name": "fake"},
            ]
        )
    )
    assert judge_model_for(task).label() == "fake"
    assert judge_model_for(task, "m").backend == "openai"
    assert judge_model_for(task, "bundled").path == "bundled"


def test_judge_check_command_on_labelled_rows(make_task, taskfit_home, tmp_path):
    rows_ = [
        {"id": f"g{i}", "question": "q", "reference": "r", "answer": a, "label": lab, "text": "t"}
        for i, (a, lab) in enumerate(
            [("A", "correct"), ("B", "incorrect"), ("C", "correct"), ("D", "incorrect")]
        )
    ]
    path = make_task()
    data = tmp_path / "data" / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    config = yaml.safe_load(path.read_text())
    config.update(
        data={"test": "data/test.jsonl"},
        inputs=["question", "reference", "answer"],
        labels=["correct", "incorrect"],
        strategies=["zero_shot"],
        models=[
            {
                "backend": "scripted",
                "name": "judge",
                "script": {"scores": {"Candidate answer: A": {"correct": -0.1, "incorrect": -3.0}}},
            }
        ],
    )
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskfit.cli",
            "judge-check",
            str(path),
            "--candidate",
            "answer",
            "--reference",
            "reference",
            "--human",
            "label",
            "--no-calibrate",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    # judge: A correct, rest incorrect; human: A and C correct -> 3 of 4 agree
    assert figures["judge"] == "judge" and figures["n"] == 4 and figures["accuracy"] == 0.75
    assert figures["kappa"] == pytest.approx(0.5) and figures["flip_rate"] == 0.0
    bad = subprocess.run(
        [sys.executable, "-m", "taskfit.cli", "judge-check", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "needs --candidate and --human" in bad.stderr


@pytest.mark.slow
def test_bundled_judge_on_graded_answers(workspace):
    """The bundled model as the judge on 12 SciEntsBank answers: figures come out in range, verdicts read."""
    from taskfit.study import prepare

    task, ds = prepare(ROOT / "examples" / "grading_chain" / "task.yaml")
    items, human = items_from_rows(
        ds.split("test")[:12],
        inputs=task.config.inputs,
        candidate="student_answer",
        reference="reference_answer",
        human="label",
    )
    judge = Judge(judge_model_for(task), workspace=workspace)
    cal, verdicts = calibrate(judge, items, human)
    assert cal.n == 12 and cal.unreadable == 0 and 0 <= cal.accuracy <= 1 and -1 <= cal.kappa <= 1
    assert all(v.confidence is not None and v.confidence >= 0.5 for v in verdicts)
