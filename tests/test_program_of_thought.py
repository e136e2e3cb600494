"""program_of_thought with a scripted model (programs run, refused, scored, traced) and on the bundled model."""

from pathlib import Path

import pytest
from conftest import write_jsonl

from taskfit.leaderboard import rows
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    {"id": "m1", "question": "What is 17 * 3?", "answer": "51"},
    {"id": "m2", "question": "What is 2 + 2?", "answer": "4"},
    {"id": "m3", "question": "What is 10 / 4?", "answer": "2.5"},
    {"id": "m4", "question": "What is 7 - 9?", "answer": "-2"},
]
REPLIES = {
    "17 * 3": "```python\nanswer = 17 * 3\n```",
    "2 + 2": "```python\nimport os\nanswer = 4\n```",
    "10 / 4": "x = 10 / 4\nprint(x)",  # continues the prefilled fence, no fence of its own
    "7 - 9": "answer = 7 + 9",
}


def _math_task(make_task, tmp_path, strategy: dict, models: list) -> Path:
    write_jsonl(tmp_path / "data" / "math.jsonl", QUESTIONS)
    write_jsonl(tmp_path / "data" / "math_train.jsonl",
                [{"id": "d1", "question": "What is 1 + 1?", "answer": "2", "program": "a = 1\nanswer = a + 1"}])
    return make_task(data={"train": "data/math_train.jsonl", "test": "data/math.jsonl"}, inputs=["question"],
                     output="answer", labels=None, metrics=["numeric"], parse={"type": "text"},
                     prompt={"instruction": "Solve the math problem.", "input_template": "Question: {{ question }}"},
                     strategies=[strategy], models=models)


def _evaluate(workspace, path, limit=None):
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=limit, workspace=workspace)
    return workspace.runs, runs


@pytest.fixture
def scored(make_task, tmp_path, workspace):
    strategy = {"name": "program_of_thought", "program_field": "program"}
    path = _math_task(make_task, tmp_path, strategy, [{"backend": "scripted", "script": {"replies": REPLIES}}])
    store, runs = _evaluate(workspace, path)
    return {p.example_id: p for p in store.predictions(runs[0].id)}, rows(workspace, runs)


def test_programs_are_run_and_scored(scored):
    preds, _ = scored
    assert preds["m1"].answer == "51" and preds["m1"].score == 1
    assert preds["m3"].answer == "2.5" and preds["m3"].score == 1
    assert preds["m4"].answer == "16" and preds["m4"].score == 0
    details = preds["m1"].trace["details"]
    assert details["program"] == "answer = 17 * 3" and details["program_result"] == "51"
    assert preds["m1"].output == REPLIES["17 * 3"]


def test_refused_program_is_a_parse_failure(scored):
    preds, _ = scored
    p = preds["m2"]
    assert p.parse_failed == 1 and p.answer is None and p.score == 0 and p.failed == 0
    assert p.trace["details"]["sandbox_error"] == "imports are not allowed (line 1)"


def test_trace_holds_the_model_call_and_the_execution(scored):
    preds, _ = scored
    generate, execute = preds["m1"].trace["calls"]
    assert generate["step"] == "generate" and generate["kind"] == "generate"
    # the demo shows the train row's worked program; the reply is prefilled with an open fence
    demo = [m["content"] for m in generate["messages"] if m["role"] == "assistant"]
    assert demo == ["```python\na = 1\nanswer = a + 1\n```", "```python\n"]
    assert execute["step"] == "execute" and execute["kind"] == "tool" and execute["output"] == "51"
    assert execute["tokens_in"] == 0 and execute["latency_ms"] > 0


def test_execution_is_not_counted_as_a_model_call(scored):
    preds, (row,) = scored
    assert preds["m1"].calls == 1
    assert row.calls_per_query == 1.0


def test_demo_without_program_field_shows_the_target(make_task, tmp_path, workspace):
    path = _math_task(make_task, tmp_path, {"name": "program_of_thought", "prefill": False},
                      [{"backend": "scripted", "script": {"replies": REPLIES}}])
    store, runs = _evaluate(workspace, path)
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    messages = preds["m1"].trace["calls"][0]["messages"]
    assert messages[1] == {"role": "assistant", "content": "```python\nanswer = 2\n```"}
    assert messages[-1]["role"] == "user" and "variable named `answer`" in messages[-1]["content"]
    assert preds["m1"].score == 1


@pytest.mark.slow
def test_bundled_model_writes_programs(make_task, tmp_path, workspace):
    gsm8k = ROOT / "examples" / "gsm8k" / "data"
    path = make_task(data={"train": str(gsm8k / "train.jsonl"), "test": str(gsm8k / "test.jsonl")},
                     inputs=["question"], output="answer", labels=None, metrics=["numeric"],
                     parse={"type": "text"}, prompt={"instruction": "Solve the math problem.",
                                                     "input_template": "Question: {{ question }}"},
                     strategies=[{"name": "program_of_thought", "max_tokens": 128}], models=["bundled"])
    store, runs = _evaluate(workspace, path, limit=2)
    assert runs[0].status == "done"
    preds = store.predictions(runs[0].id)
    assert len(preds) == 2
    for p in preds:
        details = p.trace["details"]
        assert p.failed == 0 and details["program"].strip()
        assert details["program_result"] is not None or details["sandbox_error"]
