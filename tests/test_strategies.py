"""The prompt-engineering strategies on a scripted model: prompts, call counts, traces, answers."""

import json

import pytest

from taskfit.backends.scripted import ScriptedBackend
from taskfit.cache import CallCache
from taskfit.db import connect
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import prompt_parts
from taskfit.strategies import StrategyContext, strategies
from taskfit.study import prepare
from taskfit.taskfile import StrategySpec

MATH = [{"id": f"m{i}", "question": q, "answer": a, "solution": s} for i, (q, a, s) in enumerate([
    ("Tom has 3 apples and buys 4 more. How many apples?", "7", "3+4=<<3+4=7>>7\n#### 7"),
    ("A box holds 6 eggs. How many eggs in 2 boxes?", "12", "6*2=<<6*2=12>>12\n#### 12"),
    ("Sam had 10 sweets and ate 3. How many are left?", "7", "10-3=<<10-3=7>>7\n#### 7"),
])]


@pytest.fixture
def math_task(make_task, tmp_path):
    from conftest import write_jsonl

    write_jsonl(tmp_path / "data" / "math.jsonl", MATH)
    path = make_task(data={"train": "data/math.jsonl", "test": "data/math.jsonl"}, inputs=["question"], output="answer",
                     labels=None, metrics=["numeric"], parse={"type": "text"}, strategies=["zero_shot"],
                     prompt={"instruction": "Solve the problem.", "input_template": "Question: {{ question }}"})
    return prepare(path)


def _run(task_ds, spec: dict, reply, mode="generate", script=None):
    cache = CallCache(connect("sqlite://"))  # in memory: these tests read predictions, not stored calls
    task, ds = task_ds
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=ds.splits["train"], mode=mode, seed=0)
    backend = ScriptedBackend(script or {}, reply=reply)
    strategy = strategies.get(spec["name"])(StrategySpec(**spec), ctx)
    preds = strategy.predict(ds.split("test"), LM(backend, cache))
    return preds, backend


def _last_user(req) -> str:
    return [m["content"] for m in req.messages if m["role"] == "user"][-1]


def test_persona_sets_the_system_message(math_task):
    preds, backend = _run(math_task, {"name": "persona", "persona": "a patient maths teacher"}, lambda r: "7")
    assert backend.requests[0].messages[0] == {"role": "system", "content": "You are a patient maths teacher."}
    assert [p.answer for p in preds] == ["7", "7", "7"]


def test_one_shot_uses_one_demo(math_task):
    _, backend = _run(math_task, {"name": "one_shot"}, lambda r: "7")
    roles = [m["role"] for m in backend.requests[0].messages]
    assert roles == ["user", "assistant", "user"]


def test_cot_demos_carry_clean_rationales_and_answer_is_read_off_the_end(math_task):
    reply = lambda r: "First 3 + 4 = 7.\nThe answer is 7." if "apples" in _last_user(r) else "So 12.\n#### 12"  # noqa: E731
    preds, backend = _run(math_task, {"name": "cot", "k": 2, "rationale_field": "solution"}, reply)
    demo = backend.requests[0].messages[1]["content"]
    assert demo == "3+4=7\nThe answer is 7." and "<<" not in demo
    assert preds[0].answer == "7" and preds[1].answer == "12"
    assert all(p.trace.n_calls == 1 for p in preds)


def test_cot_needs_rationales(math_task):
    with pytest.raises(TaskfitError, match="rationale_field"):
        _run(math_task, {"name": "cot"}, lambda r: "")


def test_zero_shot_cot_makes_a_reasoning_call_then_an_answer_call(math_task):
    def reply(r):
        last = r.messages[-1]
        if last["role"] == "assistant" and last["content"].endswith("Therefore, the answer is"):
            return " 7."
        return "Tom starts with 3 and adds 4, which is 7."

    preds, backend = _run(math_task, {"name": "zero_shot_cot"}, reply)
    assert preds[0].answer == "7" and preds[0].trace.n_calls == 2
    assert [c["step"] for c in preds[0].trace.calls] == ["reason", "generate"]
    assert backend.requests[0].messages[-1]["content"] == "Let's think step by step."
    assert "which is 7." in backend.requests[-1].messages[-1]["content"]


def test_self_consistency_votes_and_costs_k_completions(math_task, workspace):
    samples = iter(["The answer is 7.", "The answer is 8.", "The answer is 7.", "The answer is 7.", "The answer is 9."] * 3)

    def reply(r):
        assert r.n == 5 and r.temperature == 0.7
        return next(samples)

    preds, _ = _run(math_task, {"name": "self_consistency", "k": 5}, reply)
    # the scripted backend repeats one text n times; vote on a backend that varies the samples instead:
    assert preds[0].trace.n_calls == 5
    from taskfit.backends import GenerateResult

    class Varied(ScriptedBackend):
        def generate(self, requests):
            return [GenerateResult(texts=["The answer is 7.", "The answer is 8.", "#### 7", "7 apples", "The answer is 9"],
                                   tokens_in=10, tokens_out=20) for _ in requests]

    task, ds = math_task
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=ds.splits["train"], mode="generate")
    sc = strategies.get("self_consistency")(StrategySpec(name="self_consistency", k=5), ctx)
    preds = sc.predict(ds.split("test"), LM(Varied({"varied": True}), CallCache(connect("sqlite://"))))
    assert preds[0].answer == "7" and preds[0].details["votes"] == {"7": 3, "8": 1, "9": 1}
    assert preds[0].details["agreement"] == pytest.approx(0.6)


def test_self_refine_stops_when_the_critique_finds_nothing(math_task):
    def reply(r):
        text = _last_user(r)
        if "Check the proposed answer" in text:
            return "NO ISSUES" if "Proposed answer: 7" in text else "The sum is wrong."
        if "A reviewer said" in text:
            return "7"
        return "7" if "apples" in text else "5"

    preds, _ = _run(math_task, {"name": "self_refine", "rounds": 2}, reply)
    steps = [[c["step"] for c in p.trace.calls] for p in preds]
    assert steps[0] == ["draft", "critique"] and preds[0].details["rounds"] == 0
    assert steps[1] == ["draft", "critique", "rewrite", "critique"] and preds[1].answer == "7"


def test_tree_of_thoughts_keeps_the_best_rated_thoughts(math_task):
    def reply(r):
        if r.messages[-1]["content"].endswith("Therefore, the answer is"):
            return " 7"
        return "a good step" if r.seed == 0 else "a better step"

    # ratings come from label scores: 'good'/'better' steps are 'sure'
    script = {"scores": {"better step": {"sure": -0.01, "likely": -6.0, "impossible": -6.0},
                         "good step": {"sure": -6.0, "likely": -0.01, "impossible": -6.0}}}
    preds, _ = _run(math_task, {"name": "tree_of_thoughts", "breadth": 1, "depth": 2, "proposals": 2, "budget": 20}, reply,
                    script=script)
    p = preds[0]
    steps = [c["step"] for c in p.trace.calls]
    assert steps == ["propose@1", "rate@1", "propose@2", "rate@2", "generate"]
    assert p.trace.n_calls == 2 + 1 + 2 + 1 + 1  # proposals count their samples; identical ones are rated once
    assert p.answer == "7" and p.details["reasoning"] == "a good step\na better step"
    assert p.details["frontier"][0]["value"] == pytest.approx(1.0, abs=0.01)


def test_tree_of_thoughts_stops_expanding_at_the_budget(math_task):
    preds, _ = _run(math_task, {"name": "tree_of_thoughts", "breadth": 1, "depth": 3, "proposals": 2, "budget": 6},
                    lambda r: "a step")
    steps = [c["step"] for c in preds[0].trace.calls]
    assert "propose@2" not in steps and preds[0].trace.n_calls <= 6


def test_chain_passes_json_between_steps(math_task):
    def reply(r):
        text = _last_user(r)
        if text.startswith("Extract"):
            return 'Here: {"numbers": [3, 4]}'
        return json.dumps({"sum": 7}) if "[3, 4]" in text else "{}"

    steps = [{"name": "extract", "prompt": "Extract the numbers from: {{ question }}", "output": "json"},
             {"name": "solve", "prompt": "Add {{ steps.extract.numbers }} and reply as JSON.", "output": "json"}]
    preds, backend = _run(math_task, {"name": "chain", "steps": steps}, reply)
    assert preds[0].details["steps"]["extract"] == {"numbers": [3, 4]}
    assert preds[0].output == '{"sum": 7}' and preds[0].answer == "7" or preds[0].answer == '{"sum": 7}'
    assert [c["step"] for c in preds[0].trace.calls] == ["extract", "solve"]


def test_chain_template_errors_name_the_step(math_task):
    bad = [{"name": "a", "prompt": "{{ qestion }}"}]
    with pytest.raises(TaskfitError, match=r"steps\[0\].prompt.*'qestion'"):
        _run(math_task, {"name": "chain", "steps": bad}, lambda r: "")
    order = [{"name": "a", "prompt": "{{ steps.b }}"}, {"name": "b", "prompt": "{{ question }}"}]
    with pytest.raises(TaskfitError, match="not an earlier step"):
        _run(math_task, {"name": "chain", "steps": order}, lambda r: "")


def test_chain_prefill_is_part_of_the_output(math_task):
    steps = [{"name": "solve", "prompt": "{{ question }} Reply as JSON.", "output": "json", "prefill": '{"sum": '}]
    preds, backend = _run(math_task, {"name": "chain", "steps": steps}, lambda r: "7}")
    assert backend.requests[0].messages[-1] == {"role": "assistant", "content": '{"sum": '}
    assert preds[0].output == '{"sum": 7}' and preds[0].details["steps"]["solve"] == {"sum": 7}
