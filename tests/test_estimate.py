"""Cost estimates before a run (`--dry-run`), and the estimate beside the actual figures after it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from taskfit.estimate import actual_from_predictions, compare_runs, comparison, estimate_arms
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms
from taskfit.types import PredictionRow
from taskfit.workspace import Workspace

QUESTIONS = [f"{name} has {a} {thing} and gets {b} more{' from a very kind friend' * (i % 3)}. How many {thing} now?"
             for i, (name, a, b, thing) in enumerate([
                 ("Tom", 3, 4, "apples"), ("Ann", 5, 2, "pens"), ("Bo", 7, 1, "cards"), ("Cy", 2, 9, "eggs"),
                 ("Di", 6, 6, "cups"), ("Ed", 1, 8, "hats"), ("Fay", 4, 4, "keys"), ("Gus", 9, 3, "maps"),
                 ("Hal", 8, 2, "nuts"), ("Ivy", 2, 2, "owls"), ("Jo", 3, 3, "pins"), ("Kit", 5, 5, "rugs"),
                 ("Lu", 6, 1, "saws"), ("Max", 7, 7, "tins"), ("Ned", 4, 1, "vans"), ("Oz", 1, 1, "webs")])]

# replies by prompt substring, first match wins (the answer step, sub-questions, decomposition, reasoning)
SCRIPT = {"replies": {
    "Therefore, the answer is": " 7",
    "Answer this sub-question briefly": "They had the first number of things to start with.",
    "simpler sub-questions": "1. How many did they have at first?\n2. How many did they get?",
    "Let's think step by step": "Add the two numbers given in the problem together to get the total number.",
}, "default": "7"}


@pytest.fixture
def math_task(make_task, tmp_path):
    from conftest import write_jsonl

    rows = [{"id": f"q{i}", "question": q, "answer": "7"} for i, q in enumerate(QUESTIONS)]
    write_jsonl(tmp_path / "data" / "q.jsonl", rows)
    return make_task(data={"train": "data/q.jsonl", "test": "data/q.jsonl"}, inputs=["question"], output="answer",
                     labels=None, metrics=["numeric"], parse={"type": "text"}, max_tokens=8,
                     strategies=["zero_shot", {"name": "zero_shot_cot", "max_tokens": 40},
                                 {"name": "least_to_most", "max_subquestions": 2, "decompose_tokens": 30,
                                  "subanswer_tokens": 20}],
                     models=[{"backend": "scripted", "name": "fake", "price_in_per_1m": 2.0,
                              "price_out_per_1m": 6.0, "script": SCRIPT}],
                     prompt={"instruction": "Solve the problem.", "input_template": "Question: {{ question }}"})


def test_estimate_is_within_a_quarter_of_the_actual_run(math_task, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    task, ds = prepare(math_task)
    arms = select_arms(task, None, None)
    # a short first run gives the cache its measurements (reply lengths, latencies)
    evaluate(task, ds, arms, split="test", limit=4, workspace=ws)
    estimates = estimate_arms(task, ds, arms, split="test", limit=16, cache=ws.cache)
    records = evaluate(task, ds, arms, split="test", limit=16, workspace=ws)
    compared = compare_runs(ws.engine, estimates, [(r.strategy, r.model, r.id) for r in records])
    assert [c["strategy"] for c in compared] == ["zero_shot", "zero_shot_cot", "least_to_most"]
    for c in compared:
        for key in ("calls", "tokens_in", "tokens_out"):
            est, act = c[key]
            assert act > 0 and abs(est - act) <= 0.25 * act, (c["strategy"], key, est, act)
    # the 4 rows of the first run are in the cache: their calls are free and counted apart
    cot = next(e for e in estimates if e.strategy == "zero_shot_cot")
    assert cot.cached_calls == 4 * 2 and cot.calls == 12 * 2 and cot.calls_per_query == 2
    assert cot.dollars == pytest.approx((cot.tokens_in * 2 + cot.tokens_out * 6) / 1e6)
    stored_est, stored_act = comparison(ws.engine, records[1].id)
    assert stored_est["calls"] == cot.calls and stored_act["calls"] == compared[1]["calls"][1]


def test_dry_run_calls_no_model_and_writes_nothing(math_task, tmp_path, monkeypatch):
    from taskfit.backends import backends

    def no_backend(name):
        raise AssertionError(f"a dry run constructed the {name} backend")

    monkeypatch.setattr(backends, "get", no_backend)
    ws = Workspace.open(tmp_path / "ws")
    task, ds = prepare(math_task)
    (est,) = estimate_arms(task, ds, select_arms(task, ["least_to_most"], None), split="test", limit=5, cache=ws.cache)
    # cold cache: every call is new; reply lengths are taken at their limits and loops at theirs
    assert est.steps == {"decompose": 5, "subquestion@1": 5, "subquestion@2": 5, "generate": 5}
    assert est.tokens_out == 5 * (30 + 20 + 20 + 8) and est.cached_calls == 0
    assert est.time_basis.startswith("default")
    assert ws.cache.count() == 0


def test_eval_dry_run_cli_json(math_task, taskfit_home, monkeypatch):
    from taskfit.backends import backends
    from taskfit.cli import app

    monkeypatch.setattr(backends, "get", lambda name: pytest.fail("backend constructed"))
    res = CliRunner().invoke(app, ["eval", str(math_task), "--dry-run", "--json", "--limit", "3"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["strategy"] for r in rows] == ["zero_shot", "zero_shot_cot", "least_to_most"]
    assert [r["calls"] for r in rows] == [3, 6, 12] and all(r["n"] == 3 for r in rows)
    text = CliRunner().invoke(app, ["run", str(math_task), "--dry-run", "--limit", "3"]).stdout
    assert "Estimate (dry run)" in text and "least_to_most" in text and "total" in text


def test_a_real_eval_prints_and_stores_the_estimate_beside_the_actual(math_task, taskfit_home):
    from taskfit.cli import app

    res = CliRunner().invoke(app, ["eval", str(math_task), "--strategy", "zero_shot_cot", "--limit", "3", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    est, act = comparison(Workspace.default().engine, row["run_id"])
    assert est["calls"] == act["calls"] == 6


def test_actual_counts_fresh_calls_only():
    calls = [{"step": "reason", "params": {"n": 3}, "cached": False, "tokens_in": 10, "tokens_out": 30,
              "latency_ms": 500.0},
             {"step": "generate", "params": {"n": 1}, "cached": True, "tokens_in": 12, "tokens_out": 2,
              "latency_ms": 100.0}]
    act = actual_from_predictions([PredictionRow(trace={"calls": calls})])
    assert act == {"calls": 3, "cached_calls": 1, "tokens_in": 10, "tokens_out": 30, "seconds": 0.5}


@pytest.mark.slow
def test_run_dry_run_on_the_sst2_example_loads_no_model(monkeypatch):
    from taskfit.backends import backends
    from taskfit.cli import app

    monkeypatch.setattr(backends, "get", lambda name: pytest.fail("backend constructed"))
    res = CliRunner().invoke(app, ["run", "examples/sst2/task.yaml", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "Estimate (dry run): sst2" in res.stdout and "few_shot_knn" in res.stdout
    assert "Fine-tuned rows are not included" in res.stdout


def test_optimize_dry_run_prices_the_budget_and_the_test_comparison(make_task, taskfit_home, monkeypatch):
    from taskfit.backends import backends
    from taskfit.cli import app

    monkeypatch.setattr(backends, "get", lambda name: pytest.fail("backend constructed"))
    res = CliRunner().invoke(app, ["optimize", str(make_task()), "--budget", "40", "--dry-run", "--json", "--limit", "5"])
    assert res.exit_code == 0, res.output
    search, winner, zero_shot = json.loads(res.stdout)
    assert search["calls"] == 40 and search["tokens_in"] > 0
    assert winner["strategy"] == "test: winner (as few_shot)" and winner["n"] == zero_shot["n"] == 5
    assert winner["tokens_in"] > zero_shot["tokens_in"]  # demonstrations make the prompt longer
