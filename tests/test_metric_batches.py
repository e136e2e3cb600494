"""Metrics score a batch: the judge grades a chunk of predictions in batched model calls, and what it spent
reaches the stored predictions and the leaderboard."""

import pytest

from taskfit.backends.scripted import ScriptedBackend
from taskfit.dataset import Example
from taskfit.leaderboard import rows
from taskfit.metrics import Scored, build_metric, score_batch
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms

JUDGE = {
    "backend": "scripted",
    "name": "judge",
    "price_in_per_1m": 2.0,
    "price_out_per_1m": 8.0,
    "script": {"scores": {"Candidate answer: Positive": {"correct": -0.1, "incorrect": -2.0},
                          "Candidate answer: negative": {"correct": -0.1, "incorrect": -2.0}}},
}


def test_per_example_metrics_score_a_batch_and_missing_answers_score_zero():
    ex = [Example("a", {}, "Paris"), Example("b", {}, "Rome"), Example("c", {}, "Oslo")]
    out = score_batch(build_metric("exact_match", {}), ["paris", None, "Bergen"], ex)
    assert out == [Scored(1.0), Scored(0.0), Scored(0.0)]


def test_the_judge_batches_its_calls_and_its_spend_reaches_the_leaderboard(make_task, workspace, monkeypatch):
    batches: list[tuple[str, int]] = []
    real_score = ScriptedBackend.score

    def recording_score(self, requests):
        batches.append((self.model_id, len(requests)))
        return real_score(self, requests)

    monkeypatch.setattr(ScriptedBackend, "score", recording_score)
    monkeypatch.setattr(ScriptedBackend, "batch_size", 16)
    path = make_task(labels=None, output_mode="generate", strategies=["zero_shot"],
                     metrics=[{"judge": {"model": JUDGE, "fields": ["text"], "calibrate": False}}, "exact_match"])
    task, ds = prepare(path)
    store = workspace.runs
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    judge_batches = [n for model_id, n in batches if model_id.startswith("scripted:judge")]
    assert judge_batches == [8]  # all 8 answers graded in one batched call, not 8 calls of one

    preds = store.predictions(runs[0].id)
    graded = [p for p in preds if p.answer is not None]
    assert len(graded) == 8
    for p in graded:
        assert p.scoring["calls"] == 1 and p.scoring["tokens_in"] > 0
        assert p.scoring["reasons"]["judge"].split()[0] in ("correct", "incorrect")
        assert p.scoring["cost"] == pytest.approx(p.scoring["tokens_in"] * 2.0 / 1e6)
    (row,) = rows(workspace, runs)
    assert row.judge_calls == 8
    assert row.judge_tokens_in == pytest.approx(sum(p.scoring["tokens_in"] for p in preds) / 8)
    assert row.judge_cost_per_1k == pytest.approx(1000 * row.judge_tokens_in * 2.0 / 1e6)
    assert row.score == pytest.approx(5 / 8)
    assert {"judge_calls", "judge_tokens_in", "judge_tokens_out", "judge_cost_per_1k"} <= set(row.to_json())
