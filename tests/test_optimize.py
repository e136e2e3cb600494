"""`taskfit optimize` on fake models: the search stays within its budget, never reads the test split, finds
the better prompt, and saves it as a strategy that eval and run accept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import write_jsonl

from taskfit.backends import GenerateResult, ScoreResult
from taskfit.errors import TaskfitError
from taskfit.optimize import run as optimize_run
from taskfit.optimize.run import optimize
from taskfit.optimize.search import OptimizeConfig
from taskfit.runner import BackendPool, evaluate
from taskfit.study import prepare, select_arms

WORDS = {"great": "positive", "fine": "positive", "terrible": "negative", "dull": "negative"}
BETTER = "Think about the writer's opinion of the film."


class OpinionModel:
    """A fake model that labels 'great'/'terrible' reviews right, and 'fine'/'dull' ones right only when the
    prompt asks about the writer's opinion; its instruction proposals include that one (and a template)."""

    model_id = "fake:opinion"
    supports_score = True
    supports_tools = False
    local = True
    batch_size = 4

    def __init__(self) -> None:
        self.requests: list[str] = []  # every prompt that reached the model
        self.calls = 0  # completions computed (a request for n samples counts n)

    def describe(self):
        return {"backend": "fake"}

    def _prompt(self, r) -> str:
        text = "\n".join(str(m.get("content") or "") for m in r.messages)
        self.requests.append(text)
        return text

    def _label(self, prompt: str) -> str | None:
        last_user = prompt.rsplit("Review:", 1)[-1]
        for word, label in WORDS.items():
            if word in last_user:
                return label if word in ("great", "terrible") or "writer's opinion" in prompt else "positive"
        return None

    def score(self, requests):
        out = []
        for r in requests:
            label = self._label(self._prompt(r))
            self.calls += 1
            out.append(ScoreResult(logprobs=[-0.1 if label and c.strip().lower() == label else -2.0
                                             for c in r.continuations], token_counts=[1] * len(r.continuations),
                                   tokens_in=10, latency_ms=1.0))
        return out

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = self._prompt(r)
            self.calls += r.n
            if "write the instruction" in prompt:
                replies = [f"Instruction: {BETTER}", "Say positive or negative for it.", "Answer {{ 7*7 }} now"]
                texts = [replies[(r.seed + i) % len(replies)] for i in range(r.n)]
            else:
                label = self._label(prompt) or "positive"
                texts = [f"The review sounds {label}.\nThe answer is {label}."] * r.n
            out.append(GenerateResult(texts=texts, tokens_in=10, tokens_out=5, latency_ms=1.0))
        return out


class FakePool(BackendPool):
    def __init__(self) -> None:
        super().__init__()
        self.model = OpinionModel()

    def get(self, spec):
        return self.model


@pytest.fixture
def opinion_task(tmp_path):
    words = list(WORDS)
    train = [{"id": f"t{i}", "text": f"review {i} {words[i % 4]}", "label": WORDS[words[i % 4]]} for i in range(80)]
    test = [{"id": f"x{i}", "text": f"TESTROW {i} {words[i % 4]}", "label": WORDS[words[i % 4]]} for i in range(24)]
    write_jsonl(tmp_path / "data" / "train.jsonl", train)
    write_jsonl(tmp_path / "data" / "test.jsonl", test)
    config = {
        "name": "opinions", "description": "Say whether a review is positive or negative.",
        "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
        "inputs": ["text"], "output": "label", "labels": ["negative", "positive"], "metrics": ["accuracy"],
        "prompt": {"instruction": "Classify the review.", "input_template": "Review: {{ text }}"},
        "calibrate": True,
        "models": [{"backend": "scripted", "name": "fake"}],  # replaced by FakePool in these tests
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ForbiddenRows(list):
    """Test-split rows that refuse to be read while ``armed``, and log every read after."""

    def __init__(self, rows, log):
        super().__init__(rows)
        self.log, self.armed = log, True

    def _read(self):
        if self.armed:
            raise AssertionError("the test split was read during the search")
        self.log.append("test split read")

    def __iter__(self):
        self._read()
        return super().__iter__()

    def __getitem__(self, i):
        self._read()
        return super().__getitem__(i)


def test_search_never_reads_the_test_split(opinion_task, monkeypatch, workspace):
    log: list[str] = []
    guards: list[ForbiddenRows] = []
    real_prepare = optimize_run.prepare

    def guarded_prepare(path):
        task, dataset = real_prepare(path)
        guards.append(ForbiddenRows(dataset.splits["test"], log))
        dataset.splits["test"] = guards[-1]
        return task, dataset

    monkeypatch.setattr(optimize_run, "prepare", guarded_prepare)
    pool = FakePool()
    seen_during_search: list[str] = []

    def on_event(event):
        if event["event"] == "search_done":
            seen_during_search.extend(pool.model.requests)
            log.append("search done")
            guards[0].armed = False

    outcome = optimize(opinion_task, OptimizeConfig(budget=120), workspace=workspace, progress=on_event, pool=pool)
    assert log[0] == "search done" and "test split read" in log[1:]  # read for the comparison, only after
    assert seen_during_search and not any("TESTROW" in p for p in seen_during_search)
    assert any("TESTROW" in p for p in pool.model.requests)  # the comparison did score the test rows
    assert outcome.record.report["test"]["winner"]["n"] == 24


@pytest.mark.parametrize("budget", [30, 75, 160])
def test_search_stays_within_budget_and_repeats_exactly_from_the_cache(opinion_task, budget, workspace):
    pool = FakePool()
    sent_in_search: list[int] = []

    def on_event(event):
        assert event["calls"] <= budget
        if event["event"] == "search_done":
            sent_in_search.append(pool.model.calls)

    first = optimize(opinion_task, OptimizeConfig(budget=budget), workspace=workspace, progress=on_event, pool=pool).record
    assert first.calls <= budget and first.calls_sent == sent_in_search[0]
    again_pool = FakePool()
    again = optimize(opinion_task, OptimizeConfig(budget=budget), workspace=workspace, pool=again_pool).record
    assert again.calls_sent == 0 and again.calls == first.calls  # same decisions, all from the call cache
    assert again.program == first.program and again.id != first.id


def test_finds_the_better_instruction_and_reports_dev_and_test(opinion_task, workspace):
    proposed: list[int] = []
    pool = FakePool()
    # a fixed first rung leaves budget after the race: rounds 2 and 3 run on it
    outcome = optimize(opinion_task, OptimizeConfig(budget=600, instructions=3, first_rung=8), workspace=workspace, pool=pool,
                       progress=lambda e: proposed.append(e["n"]) if e["event"] == "proposed" else None)
    rec = outcome.record
    assert proposed == [2, 0, 0]  # three replies, one refused; rounds 2 and 3 only repeated them
    meta = [p for p in pool.model.requests if "write the instruction" in p]
    assert len(meta) == 3 and f"Instruction: {BETTER}\nScore: 1.00" in meta[1]  # round 2 sees round 1's scores
    assert rec.spec.instruction == BETTER
    assert BETTER in rec.prompt and "Review: <text>" in rec.prompt
    instructions = {c["program"]["instruction"] for c in rec.candidates}
    assert not any("{{" in i for i in instructions)  # the template-like proposal was refused
    assert "Say positive or negative for it." in instructions
    rep = rec.report
    assert rep["test"]["winner"]["score"] == 1.0 and rep["test"]["baseline"]["score"] == 0.75
    assert rep["test"]["baseline"]["p_vs_best"] is not None
    assert rep["gap"]["winner"] == pytest.approx(rep["dev"]["winner"]["mean"] - 1.0)
    assert rep["dev"]["winner"]["n"] > 0 and rep["dev"]["winner"]["ci_low"] <= rep["dev"]["winner"]["mean"]
    losers = [c for c in rec.candidates if c["status"] not in ("winner", "in the race")]
    assert losers and all(c["n"] < 40 for c in losers)  # dropped before the whole dev split


def test_optimized_strategy_reproduces_in_eval_and_task_files(opinion_task, tmp_path, workspace):
    pool = FakePool()
    rec = optimize(opinion_task, OptimizeConfig(budget=200), workspace=workspace, pool=pool).record
    task, dataset = prepare(opinion_task)
    (arm,) = select_arms(task, [f"optimized:{rec.id}"], None)
    assert arm.strategy.name == "optimized" and arm.strategy.label() == f"optimized:{rec.id}"
    store = workspace.runs

    (run,) = evaluate(task, dataset, [arm], split="test", limit=None, workspace=workspace, pool=pool)
    stored = store.predictions(rec.report["test"]["winner"]["run_id"])
    again = store.predictions(run.id)
    assert [p.answer for p in again] == [p.answer for p in stored]
    # the task-file form
    raw = yaml.safe_load(opinion_task.read_text())
    raw["strategies"] = ["zero_shot", f"optimized:{rec.id[:6]}"]
    other = tmp_path / "with_optimized.yaml"
    other.write_text(yaml.safe_dump(raw))
    task2, _ = prepare(other)
    assert [s.label() for s in task2.config.strategies] == ["zero_shot", f"optimized:{rec.id[:6]}"]


def test_unknown_or_foreign_optimization_is_a_clear_error(opinion_task, tmp_path, workspace):
    task, dataset = prepare(opinion_task)
    (arm,) = select_arms(task, ["optimized:nosuchrun"], None)

    with pytest.raises(TaskfitError, match="no optimization run matches 'nosuchrun'"):
        evaluate(task, dataset, [arm], split="test", limit=2, workspace=workspace, pool=FakePool())
    rec = optimize(opinion_task, OptimizeConfig(budget=40, instructions=0), workspace=workspace, pool=FakePool()).record
    raw = yaml.safe_load(opinion_task.read_text())
    raw["name"] = "another_task"
    other = tmp_path / "another.yaml"
    other.write_text(yaml.safe_dump(raw))
    task2, ds2 = prepare(other)
    (arm2,) = select_arms(task2, [f"optimized:{rec.id}"], None)
    with pytest.raises(TaskfitError, match="made for task 'opinions'"):
        evaluate(task2, ds2, [arm2], split="test", limit=2, workspace=workspace, pool=FakePool())


def test_budget_too_small_and_missing_train_are_clear_errors(opinion_task, tmp_path, workspace):
    with pytest.raises(TaskfitError, match="cannot score the candidates on a single dev row"):
        optimize(opinion_task, OptimizeConfig(budget=1, demo_sets=0, instructions=0), workspace=workspace, pool=FakePool())
    raw = yaml.safe_load(opinion_task.read_text())
    raw["data"] = {"test": "data/test.jsonl"}
    no_train = tmp_path / "no_train.yaml"
    no_train.write_text(yaml.safe_dump(raw))
    with pytest.raises(TaskfitError, match="needs a dev split or a train split"):
        optimize(no_train, OptimizeConfig(budget=50), workspace=workspace, pool=FakePool())


def test_cot_candidates_use_bootstrapped_rationales(opinion_task, workspace):
    config = OptimizeConfig(budget=150, strategies=["zero_shot", "cot"], instructions=0, k=2)
    rec = optimize(opinion_task, config, workspace=workspace, pool=FakePool()).record
    cot = [c for c in rec.candidates if c["program"]["base"] == "cot"]
    assert cot and all(d["source"] == "bootstrapped" and d["rationale"] for c in cot for d in c["program"]["demos"])
    assert all(d["rationale"].startswith("The review sounds") and "The answer is" not in d["rationale"]
               for d in cot[0]["program"]["demos"])
    store = workspace.optimizations
    assert store.get(rec.id).candidates == rec.candidates


TASKFIT = [sys.executable, "-m", "taskfit.cli"]


def test_cli_optimize_then_eval_the_optimized_strategy(make_task, taskfit_home, tmp_path, workspace):
    rows = [{"id": f"t{i}", "text": t, "label": y} for i, (t, y) in
            enumerate([("a great film", "positive"), ("terrible acting", "negative")] * 10)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    path = make_task(strategies=["zero_shot"])
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home)}
    res = subprocess.run(TASKFIT + ["optimize", str(path), "--budget", "40", "--strategies", "zero_shot,few_shot"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "calls]" in res.stderr and "best c" in res.stderr  # progress: calls spent / budget, best with CI
    assert "optimized prompt" in res.stdout and "Held-out comparison" in res.stdout and "of 40 budgeted calls" in res.stdout
    run_id = res.stdout.split("--strategy optimized:")[1].split()[0]
    ev = subprocess.run(TASKFIT + ["eval", str(path), "--strategy", f"optimized:{run_id}", "--json"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ev.returncode == 0, ev.stderr
    (row,) = json.loads(ev.stdout)
    shown = subprocess.run(TASKFIT + ["optimizations", run_id], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and f"optimized:{run_id}" in shown.stdout
    listing = subprocess.run(TASKFIT + ["optimizations"], capture_output=True, text=True, env=env, timeout=60)
    assert run_id in listing.stdout
    stored = workspace.optimizations.get(run_id)
    assert row["strategy"] == f"optimized:{run_id}" and row["score"] == stored.report["test"]["winner"]["score"]
    bad = subprocess.run(TASKFIT + ["optimize", str(path), "--budget", "40", "--strategies", "tree"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "strategies" in bad.stderr and "Traceback" not in bad.stderr
