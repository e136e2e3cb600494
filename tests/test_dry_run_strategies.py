"""Dry runs that follow a strategy's expected path: self_ask's follow-ups as its worked example shows them, and a
distillation teacher priced by the same machinery as `run --dry-run`."""

from __future__ import annotations

import pytest
from conftest import write_jsonl
from test_estimate import QUESTIONS

from taskfit.estimate import actual_from_predictions, estimate_arms
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms
from taskfit.workspace import Workspace

# a model that asks two follow-ups, as the default worked example does, then answers (first key found wins)
TWO_FOLLOW_UPS = {"replies": {
    "Intermediate answer: xq2": "So the final answer is: 7",
    "Answer briefly: Which second": "xq2",
    "Intermediate answer: xq1": "Follow up: Which second?\n",
    "Answer briefly: Which first": "xq1",
}, "default": "Yes.\nFollow up: Which first?\n"}


@pytest.fixture
def self_ask_task(make_task, tmp_path):
    def _make(strategy: dict, script: dict = TWO_FOLLOW_UPS):
        rows = [{"id": f"q{i}", "question": q, "answer": "7"} for i, q in enumerate(QUESTIONS)]
        write_jsonl(tmp_path / "data" / "q.jsonl", rows)
        return make_task(data={"train": "data/q.jsonl", "test": "data/q.jsonl"}, inputs=["question"],
                         output="answer", labels=None, metrics=["numeric"], parse={"type": "text"}, max_tokens=8,
                         strategies=[strategy], prompt={"input_template": "Question: {{ question }}"},
                         models=[{"backend": "scripted", "name": "fake", "price_in_per_1m": 1.0, "script": script}])
    return _make


def test_self_ask_is_priced_at_its_demo_s_follow_ups_not_its_limit(self_ask_task, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    task, ds = prepare(self_ask_task({"name": "self_ask", "max_followups": 3}))
    arms = select_arms(task, None, None)
    (est,) = estimate_arms(task, ds, arms, split="test", limit=5, cache=ws.cache)
    # two follow-ups (three transcript continuations, two answers), then the answer call
    assert est.steps == {"ask@1": 5, "follow_up@1": 5, "ask@2": 5, "follow_up@2": 5, "ask@3": 5, "generate": 5}
    (record,) = evaluate(task, ds, arms, split="test", limit=5, workspace=ws)
    actual = actual_from_predictions(ws.runs.predictions(record.id))
    # a model that does as the demo does makes those calls (its follow-ups, alike in every row, are sent once)
    assert actual["calls"] + actual["cached_calls"] == est.calls == 30


def test_self_ask_s_estimate_keeps_to_a_lower_limit(self_ask_task, tmp_path):
    task, ds = prepare(self_ask_task({"name": "self_ask", "max_followups": 1}))
    (est,) = estimate_arms(task, ds, select_arms(task, None, None), split="test", limit=5,
                           cache=Workspace.open(tmp_path / "ws").cache)
    assert est.steps == {"ask@1": 5, "follow_up@1": 5, "ask@2": 5, "generate": 5}


def test_a_distillation_teacher_is_priced_like_a_run_without_building_its_model(self_ask_task, tmp_path,
                                                                                monkeypatch):
    from taskfit.backends import backends
    from taskfit.distill.label import Budget, affordable, estimate, parse_teacher

    monkeypatch.setattr(backends, "get", lambda name: pytest.fail("backend constructed"))
    ws = Workspace.open(tmp_path / "ws")
    task, ds = prepare(self_ask_task({"name": "least_to_most", "max_subquestions": 2, "decompose_tokens": 30,
                                      "subanswer_tokens": 20}))
    arm = parse_teacher(task, "least_to_most@fake")
    rows = ds.split("train")[:6]
    est = estimate(task, arm, rows, cache=ws.cache, demos=[])
    (run_est,) = estimate_arms(task, ds, [arm], split="train", limit=6, cache=ws.cache)
    # every step of the strategy is counted (decomposition, two sub-questions, the answer), as a run's dry run
    assert est.calls == run_est.calls == 6 * 4 and est.tokens_out == run_est.tokens_out == 6 * (30 + 20 + 20 + 8)
    assert est.dollars == pytest.approx(run_est.dollars) and est.dollars > 0
    assert [c for c, _ in est.per_row] == [4] * 6
    assert affordable(est, Budget(calls=10)) == 2


def test_a_calibration_prompt_shared_by_the_rows_is_one_call_in_the_labelling_estimate(make_task, tmp_path):
    from taskfit.distill.label import estimate, label, parse_teacher
    from taskfit.runner import BackendPool

    task, ds = prepare(make_task(calibrate=True, strategies=["zero_shot"]))
    arm = parse_teacher(task, "zero_shot@fake")
    ws = Workspace.open(tmp_path / "ws")
    rows = ds.split("train")
    est = estimate(task, arm, rows, cache=ws.cache, demos=[])
    assert (est.calls, est.cached) == (len(rows) + 1, 0)  # a score call per row, one content-free call
    out = label(task, arm, rows, backend=BackendPool(ws).get(arm.model), workspace=ws, demos=[])
    assert out.cost.calls == est.calls
    assert (estimate(task, arm, rows, cache=ws.cache, demos=[]).cached) == len(rows) + 1
