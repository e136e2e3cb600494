"""The catalog of multi-step prompting strategies on a scripted model: steps, traces, answers, label scoring."""

from __future__ import annotations

import numpy as np
import pytest

from taskfit.backends import GenerateResult
from taskfit.backends.scripted import ScriptedBackend
from taskfit.lm import LM
from taskfit.prompts import prompt_parts
from taskfit.strategies import StrategyContext, describe, strategies
from taskfit.study import prepare
from taskfit.taskfile import StrategySpec
from taskfit.workspace import Workspace

CATALOG = ["least_to_most", "plan_and_solve", "step_back", "chain_of_verification", "system2_attention", "analogical",
           "contrastive_cot", "auto_cot", "active_prompt", "metacognitive", "self_ask"]

MATH = [{"id": f"m{i}", "question": q, "answer": a, "solution": s} for i, (q, a, s) in enumerate([
    ("Tom has 3 apples and buys 4 more. How many apples?", "7", "3+4=<<3+4=7>>7\n#### 7"),
    ("A box holds 6 eggs. How many eggs in 2 boxes?", "12", "6*2=<<6*2=12>>12\n#### 12"),
    ("Sam had 10 sweets and ate 3. How many are left?", "7", "10-3=<<10-3=7>>7\n#### 7"),
])]

ANSWER_OPENINGS = ("Therefore, the answer is", "So the final answer is:")
ANSWER_TOKENS = 7  # the task's max_tokens: only the answer step uses it, so a scripted reply can tell it apart


@pytest.fixture(autouse=True)
def word_embeddings(monkeypatch):
    """A stand-in for MiniLM: texts sharing words get similar unit vectors (no model load in unit tests)."""

    def embed(texts, model_path=None, batch_size=64):
        vecs = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                vecs[i, sum(map(ord, w)) % 64] += 1
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)

    monkeypatch.setattr("taskfit.embeddings.embed", embed)


@pytest.fixture
def math_task(make_task, tmp_path):
    from conftest import write_jsonl

    write_jsonl(tmp_path / "data" / "math.jsonl", MATH)
    path = make_task(data={"train": "data/math.jsonl", "test": "data/math.jsonl"}, inputs=["question"], output="answer",
                     labels=None, metrics=["numeric"], parse={"type": "text"}, strategies=["zero_shot"],
                     max_tokens=ANSWER_TOKENS, prompt={"instruction": "Solve the problem.", "input_template": "Question: {{ question }}"})
    return prepare(path)


@pytest.fixture
def sentiment_task(make_task):
    return prepare(make_task())


def _run(task_ds, spec: dict, reply, mode="generate", backend=None, split="test"):
    task, ds = task_ds
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=ds.splits["train"], mode=mode, seed=0)
    backend = backend or ScriptedBackend(task.config.models[0].script or {}, reply=reply)
    strategy = strategies.get(spec["name"])(StrategySpec(**spec), ctx)
    lm = LM(backend, Workspace.open(task.root / "ws").cache)
    return strategy.predict(ds.split(split), lm), backend


def _user(req) -> str:
    return [m["content"] for m in req.messages if m["role"] == "user"][-1]


def _prefill(req) -> str:
    last = req.messages[-1]
    return last["content"] if last["role"] == "assistant" else ""


def _generic(req) -> str:
    """Answers every step of every strategy with something plausible and short."""
    if req.max_tokens == ANSWER_TOKENS:
        return " 7"
    if "Relevant, unbiased context" in _user(req):  # system2_attention keeps the review, drops the rest
        return next(line for line in _user(req).splitlines() if line.startswith(("Review:", "Question:")))
    return "We work it out carefully."


@pytest.mark.parametrize("name", CATALOG)
def test_every_strategy_generates_with_a_trace(name, math_task):
    preds, backend = _run(math_task, {"name": name}, _generic)
    assert [p.answer for p in preds] == ["7", "7", "7"]
    for p in preds:
        assert not p.failed and p.trace.n_calls >= 2
        answer_call = p.trace.calls[-1]
        assert answer_call["step"] == "generate" and answer_call["kind"] == "generate"
        assert answer_call["output"] == [" 7"]
    assert describe(name)


@pytest.mark.parametrize("name", CATALOG)
def test_every_strategy_scores_labels_in_its_final_step(name, sentiment_task):
    preds, _ = _run(sentiment_task, {"name": name}, _generic, mode="score")
    _, ds = sentiment_task
    # the scripted scores prefer 'positive' when the prompt holds "great", 'negative' for "terrible" (or a tie)
    expected = ["positive" if "great" in ex.fields["text"] else "negative" for ex in ds.split("test")]
    assert [p.answer for p in preds] == expected
    for p in preds:
        assert p.trace.calls[-1]["kind"] == "score" and set(p.details["label_logprobs"]) == {"negative", "positive"}


def test_a_failed_step_fails_the_prediction(math_task):
    def reply(req):
        return "BOOM" if "boxes" in _user(req) else _generic(req)

    task, _ = math_task
    backend = ScriptedBackend({"fail_on": "eggs"}, reply=reply)
    preds, _ = _run(math_task, {"name": "least_to_most"}, None, backend=backend)
    assert [p.failed for p in preds] == [False, True, False] and preds[1].answer is None


def test_auto_cot_picks_one_representative_per_cluster():
    from taskfit.strategies.auto_cot import representatives

    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 10
    vectors = np.concatenate([c + rng.normal(0, 0.1, (4, 8)) for c in centres])
    picked = representatives(vectors, 3, seed=0, lengths=[5] * 12, max_words=60)
    assert sorted(j // 4 for j in picked) == [0, 1, 2]  # one per cluster
    for j in picked:
        members = range(4 * (j // 4), 4 * (j // 4) + 4)
        centre = vectors[list(members)].mean(axis=0)
        assert j == min(members, key=lambda m: np.linalg.norm(vectors[m] - centre))
    # a too-long nearest member gives way to a short one of the same cluster
    lengths = [100 if j in picked else 5 for j in range(12)]
    assert set(representatives(vectors, 3, 0, lengths, max_words=60)).isdisjoint(picked)


def test_auto_cot_demos_are_zero_shot_cot_solutions_of_the_representatives(math_task):
    def reply(req):
        if _prefill(req).endswith("Therefore, the answer is"):
            return " 7"
        return "3 plus 4 is 7." if "apples" in _user(req) else "Counting gives the total."

    preds, backend = _run(math_task, {"name": "auto_cot", "k": 2}, reply)
    demos = preds[0].details["demos"]
    assert len(demos) == 2
    steps = [c["step"] for c in preds[0].trace.calls]
    # the demos' zero-shot-CoT calls (reason + answer for each) are charged once, to the batch's first example
    assert steps == ["demo:reason", "demo:generate"] * 2 + ["reason", "generate"]
    assert [c["step"] for c in preds[1].trace.calls] == ["reason", "generate"]
    query = next(r for r in backend.requests if r.messages[-1]["content"] == "Let's think step by step."
                 and sum(m["role"] == "assistant" for m in r.messages) == 3)
    replies = [m["content"] for m in query.messages[:-1] if m["role"] == "assistant"]
    assert all(r.startswith("Let's think step by step.") and "Therefore, the answer is 7." in r for r in replies)


class Varied(ScriptedBackend):
    """Sampled answers disagree on the eggs problem only (12, 13, 14, 12, 15); the others always say 7."""

    def generate(self, requests):
        out = []
        for r in requests:
            self.requests.append(r)
            prompt = "\n".join(m["content"] for m in r.messages)
            if r.n > 1 and "eggs" in prompt:
                texts = [f"6 times 2 is {v}. Therefore, the answer is {v}." for v in (12, 13, 14, 12, 15)][: r.n]
            else:
                texts = [" 7" if _prefill(r).endswith("answer is") else "Therefore, the answer is 7."] * r.n
            out.append(GenerateResult(texts=texts, tokens_in=10, tokens_out=5))
        return out


@pytest.mark.parametrize("rationale_field", [None, "solution"])
def test_active_prompt_annotates_the_inputs_the_samples_disagree_on(math_task, rationale_field):
    spec = {"name": "active_prompt", "k": 1, "samples": 5, "rationale_field": rationale_field}
    preds, backend = _run(math_task, spec, None, backend=Varied({}))
    assert preds[0].details["demos"] == [{"id": "m1", "disagreement": 0.8}]  # 4 distinct answers of 5
    sample_calls = [c for c in preds[0].trace.calls if c["step"] == "demo:sample"]
    assert len(sample_calls) == 3 and all(c["params"]["n"] == 5 for c in sample_calls)
    query = next(r for r in backend.requests if sum(m["role"] == "assistant" for m in r.messages) == 2)
    demo_reply = query.messages[1 + (query.messages[0]["role"] == "system")]["content"]
    # annotated with the gold answer: the worked solution, or a sampled reasoning that reached it
    assert demo_reply.endswith("Therefore, the answer is 12.")
    assert ("6*2=12" if rationale_field else "6 times 2 is 12") in demo_reply


def test_self_ask_answers_each_follow_up_then_answers(math_task):
    def reply(req):
        pre = _prefill(req)
        if pre.endswith("So the final answer is:"):
            return " 7"
        if _user(req).startswith("Answer briefly:"):
            return "He bought 4 apples.\nExtra line."
        if "Intermediate answer:" in pre:
            return "\nSo the final answer is: 7"
        return " Yes.\nFollow up: How many apples did Tom buy?\n"

    preds, backend = _run(math_task, {"name": "self_ask"}, reply)
    p = preds[0]
    assert [c["step"] for c in p.trace.calls] == ["ask@1", "follow_up@1", "ask@2", "generate"]
    assert p.details["follow_ups"] == [{"q": "How many apples did Tom buy?", "a": "He bought 4 apples."}]
    assert p.trace.calls[1]["params"]["stop"] == () and backend.requests[0].stop == ("Intermediate answer:",)
    final = p.trace.calls[-1]["messages"][-1]["content"]
    assert "Follow up: How many apples did Tom buy?\nIntermediate answer: He bought 4 apples." in final
    assert final.endswith("So the final answer is:") and final.count("So the final answer is") == 1
    assert p.answer == "7"


def test_self_ask_stops_at_max_followups(math_task):
    def reply(req):
        return " 7" if _prefill(req).endswith("So the final answer is:") else "Follow up: and then?\n"

    preds, _ = _run(math_task, {"name": "self_ask", "max_followups": 2}, reply)
    steps = [c["step"] for c in preds[0].trace.calls]
    assert steps == ["ask@1", "follow_up@1", "ask@2", "follow_up@2", "ask@3", "generate"]


def test_chain_of_verification_answers_questions_without_the_draft(math_task):
    def reply(req):
        text = _user(req)
        if req.max_tokens == ANSWER_TOKENS:
            return " 7"
        if "Write up to" in text:
            return "1. What is 3 + 4?\n2. Did Tom buy 4 more?\nThis line is no question"
        if "Answer briefly:" in text:
            return "3 + 4 = 7." if "3 + 4" in text else "Yes, 4 more."
        return "The answer is 8."  # the draft, wrong

    preds, backend = _run(math_task, {"name": "chain_of_verification", "questions": 2}, reply)
    p = preds[0]
    assert [c["step"] for c in p.trace.calls] == ["draft", "plan", "verify", "verify", "generate"]
    assert p.details["draft"] == "The answer is 8."
    assert p.details["verification"] == [{"q": "What is 3 + 4?", "a": "3 + 4 = 7."},
                                         {"q": "Did Tom buy 4 more?", "a": "Yes, 4 more."}]
    for call in p.trace.calls[2:4]:  # factored: the draft's error cannot leak into the checks
        assert "8" not in call["messages"][-1]["content"]
    final = p.trace.calls[-1]["messages"][-1]["content"]
    assert "A draft answer was: The answer is 8." in final and "Q: What is 3 + 4?\nA: 3 + 4 = 7." in final
    assert p.answer == "7"


def test_least_to_most_answers_subquestions_in_order(math_task):
    def reply(req):
        text = _user(req)
        if "simpler sub-questions" in text:
            return "1. How many apples did Tom have?\n2. How many did he buy?"
        if text.endswith("Answer this sub-question briefly."):
            return "3" if "have?" in text.splitlines()[-2] else "4"
        return " 7"

    preds, _ = _run(math_task, {"name": "least_to_most"}, reply)
    p = preds[0]
    assert [c["step"] for c in p.trace.calls] == ["decompose", "subquestion@1", "subquestion@2", "generate"]
    second = p.trace.calls[2]["messages"][-1]["content"]
    assert "Q: How many apples did Tom have?\nA: 3\nQ: How many did he buy?" in second
    assert p.details["subquestions"] == [{"q": "How many apples did Tom have?", "a": "3"},
                                         {"q": "How many did he buy?", "a": "4"}]


def test_contrastive_cot_pairs_right_and_wrong_explanations(math_task):
    from taskfit.strategies.contrastive_cot import shuffle_numbers

    assert shuffle_numbers("3+4=7") == "4+7=3" and shuffle_numbers("no numbers, or 1") is None
    preds, backend = _run(math_task, {"name": "contrastive_cot", "k": 2, "rationale_field": "solution"}, _generic)
    query = next(r for r in backend.requests if _prefill(r) == "Explanation:")
    text = _user(query)
    assert "Explanation: 3+4=7\nTherefore, the answer is 7.\nWrong explanation: 4+7=3\nTherefore, the answer is 8." in text
    assert query.stop == ("Wrong explanation:",)
    assert preds[0].trace.n_calls == 2  # worked solutions from the data: the demos cost no call


def test_system2_attention_answers_from_the_rewrite(sentiment_task):
    def reply(req):
        return "Review: a great film" if "Relevant, unbiased context" in _user(req) else ""

    preds, backend = _run(sentiment_task, {"name": "system2_attention"}, reply, mode="score")
    final = preds[1].trace.calls[-1]["messages"]  # 'boring and far too long' was rewritten as a great film
    assert "Review: a great film" in final[-1]["content"] and "boring" not in final[-1]["content"]
    assert preds[1].answer == "positive" and preds[1].details["rewritten"] == "Review: a great film"


def test_strategies_command_lists_the_catalog():
    from typer.testing import CliRunner

    from taskfit.cli import app

    res = CliRunner().invoke(app, ["strategies"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    listed = {line.split("│")[1].strip() for line in res.stdout.splitlines() if line.count("│") >= 3}
    for name in CATALOG:
        assert name in listed and describe(name) in res.stdout
