"""Human review: labels, the human score and metric, preference pairs, and the active-learning ordering."""

import json

import pytest

from taskfit.errors import TaskfitError
from taskfit.metrics import build_metric
from taskfit.review import (
    Evidence,
    add_choice,
    add_label,
    ci_history,
    gather_evidence,
    human_score,
    label_history,
    label_margin,
    labels,
    order_queue,
    preference_pairs,
    vote_entropy,
    write_jsonl,
)
from taskfit.study import run_study
from taskfit.types import PredictionRow

# -- the active-learning ordering on synthetic pools --------------------------------------------------------


def _pool(disagreeing: set[int], n: int = 12) -> list[Evidence]:
    """Three strategies answer n examples; they agree except on ``disagreeing``, where one dissents."""
    out = []
    for i in range(n):
        answers = {
            "zero_shot": "positive",
            "few_shot": "positive",
            "cot": "negative" if i in disagreeing else "positive",
        }
        out.append(Evidence(example_id=f"e{i}", answers=answers))
    return out


def test_queue_puts_the_disagreeing_items_first():
    disagreeing = {2, 5, 7, 11}
    queue = order_queue(_pool(disagreeing))
    assert {it.example_id for it in queue[:4]} == {f"e{i}" for i in disagreeing}
    assert all(it.disagreement > 0 for it in queue[:4]) and all(it.disagreement == 0 for it in queue[4:])
    # among equals the pool's order is kept, so the ordering is deterministic
    assert [it.example_id for it in queue[:4]] == ["e2", "e5", "e7", "e11"]


def test_a_three_way_split_outranks_a_two_to_one_split():
    pool = [
        Evidence("two_one", {"a": "x", "b": "x", "c": "y"}),
        Evidence("agree", {"a": "x", "b": "x", "c": "x"}),
        Evidence("three_way", {"a": "x", "b": "y", "c": "z"}),
    ]
    assert [it.example_id for it in order_queue(pool)] == ["three_way", "two_one", "agree"]
    assert vote_entropy(["x", "y", "z"]) == pytest.approx(1.0)
    assert vote_entropy(["x", "x", "x"]) == 0.0
    assert vote_entropy(["Positive.", "positive"]) == 0.0  # answers are compared normalised


def test_judge_uncertainty_and_low_confidence_order_items_the_strategies_agree_on():
    pool = [
        Evidence("judge_sure", {"a": "x"}, judge={"a": 0.97}),
        Evidence("judge_unsure", {"a": "x"}, judge={"a": 0.5}),
        Evidence("judge_leaning", {"a": "x"}, judge={"a": 0.8}),
    ]
    assert [it.example_id for it in order_queue(pool)] == ["judge_unsure", "judge_leaning", "judge_sure"]
    pool = [
        Evidence("confident", {"a": "x"}, confidences={"a": label_margin({"x": 0.0, "y": -6.0})}),
        Evidence("coin_flip", {"a": "x"}, confidences={"a": label_margin({"x": -0.7, "y": -0.71})}),
    ]
    assert [it.example_id for it in order_queue(pool)] == ["coin_flip", "confident"]


def test_labelled_items_go_last_and_weights_change_the_order():
    pool = [
        Evidence("done", {"a": "x", "b": "y"}, labelled=True),
        Evidence("open", {"a": "x", "b": "x"}),
        Evidence("judge", {"a": "x", "b": "x"}, judge={"a": 0.5, "b": 0.5}),
    ]
    assert [it.example_id for it in order_queue(pool)] == ["judge", "open", "done"]
    pool = [
        Evidence("split", {"a": "x", "b": "y"}),
        Evidence("unsure", {"a": "x", "b": "x"}, judge={"a": 0.5, "b": 0.5}),
    ]
    tied = order_queue(pool)  # one full signal each: equal priority, pool order kept
    assert [it.example_id for it in tied] == ["split", "unsure"] and tied[0].priority == tied[
        1
    ].priority == 1.0
    assert order_queue(pool, weights={"judge_uncertainty": 3.0})[0].example_id == "unsure"
    assert order_queue(pool, weights={"disagreement": 3.0})[0].example_id == "split"


def test_label_margin():
    assert label_margin({"a": -1.0, "b": -1.0}) == pytest.approx(0.0)
    assert label_margin({"a": 0.0, "b": -20.0}) == pytest.approx(1.0)
    assert label_margin({"a": 0.0}) is None


def test_gather_evidence_reads_answers_scores_margins_and_judge_scores():
    def pred(eid, answer, score, lps=None, judge=None):
        return PredictionRow(
            example_id=eid,
            answer=answer,
            score=score,
            metrics={"judge": judge} if judge is not None else {},
            trace={"calls": [], "details": {"label_logprobs": lps} if lps else {}},
        )

    preds = {
        "r1": [pred("e0", "pos", 1.0, {"pos": -0.1, "neg": -3.0}), pred("e1", "neg", 0.0, judge=0.5)],
        "r2": [pred("e0", "pos", 1.0, {"pos": -0.5, "neg": -0.6}), pred("e1", "pos", 1.0)],
    }
    ev = {e.example_id: e for e in gather_evidence(preds, {})}
    assert ev["e0"].answers == {"r1": "pos", "r2": "pos"} and set(ev["e0"].confidences) == {"r1", "r2"}
    assert ev["e1"].judge == {"r1": 0.5} and ev["e1"].scores == {"r1": 0.0, "r2": 1.0}
    assert [it.example_id for it in order_queue(ev.values())] == ["e1", "e0"]


# -- labels, choices and the human score on stored runs --------------------------------------------------


@pytest.fixture
def study(make_task, workspace):
    """Two scripted runs (zero_shot and few_shot_balanced) of the 8-row sentiment task."""
    _, table = run_study(make_task(), workspace=workspace)
    store = workspace.runs
    return store, {r.strategy: store.get(r.run_id) for r in table}


def test_labels_are_shared_by_runs_giving_the_same_answer_and_the_latest_wins(study):
    store, runs = study
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    answer = {p.example_id: p.answer for p in store.predictions(zs.id, with_trace=False)}
    answer_fs = {p.example_id: p.answer for p in store.predictions(fs.id, with_trace=False)}
    same = next(e for e in answer if answer[e] == answer_fs[e])
    add_label(store, zs, same, "correct")
    lab = labels(store.eng, zs.task_name)
    assert (
        human_score(store.predictions(fs.id, with_trace=False), lab).labelled == 1
    )  # the same answer elsewhere
    add_label(store, fs, same, "incorrect", comment=" second thoughts ")
    lab = labels(store.eng, zs.task_name)
    assert (
        lab[(same, answer[same].lower())].verdict == "incorrect"
        and lab[(same, answer[same].lower())].comment == "second thoughts"
    )
    hs = human_score(store.predictions(zs.id, with_trace=False), lab)
    assert (hs.labelled, hs.correct, hs.total) == (1, 0, 8)


def test_bad_review_input_is_a_clear_error(study):
    store, runs = study
    with pytest.raises(TaskfitError, match="verdict must be one of correct, incorrect"):
        add_label(store, runs["zero_shot"], "r0", "maybe")
    with pytest.raises(TaskfitError, match="has no example 'nope'"):
        add_label(store, runs["zero_shot"], "nope", "correct")
    with pytest.raises(TaskfitError, match="choice must be one of a, b, tie"):
        add_choice(store, runs["zero_shot"], runs["few_shot_balanced"], "r0", "both")


def test_ci_narrows_as_labels_come_in(study):
    store, runs = study
    zs = runs["zero_shot"]
    preds = store.predictions(zs.id, with_trace=False)
    for p in preds:
        add_label(store, zs, p.example_id, "correct" if p.score == 1 else "incorrect")
    hist = ci_history(preds, label_history(store.eng, zs.task_name))
    assert [h["n"] for h in hist] == list(range(1, 9))
    widths = [h["ci_high"] - h["ci_low"] for h in hist]
    assert widths[-1] < widths[0] and hist[-1]["accuracy"] == pytest.approx(
        sum(p.score for p in preds) / 8
    )


def test_preference_pairs_from_choices_and_labels(study, tmp_path):
    store, runs = study
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    a = {p.example_id: p for p in store.predictions(zs.id, with_trace=False)}
    b = {p.example_id: p for p in store.predictions(fs.id, with_trace=False)}
    differ = [e for e in a if a[e].answer != b[e].answer]
    assert len(differ) >= 2, "the scripted strategies should disagree somewhere"
    add_choice(store, zs, fs, differ[0], "b")
    add_choice(store, zs, fs, differ[1], "tie")
    pairs = preference_pairs(store, zs.task_name, from_labels=False)
    assert len(pairs) == 1
    (pair,) = pairs
    assert pair["chosen"] == b[differ[0]].answer and pair["rejected"] == a[differ[0]].answer
    assert (
        pair["prompt"].startswith("Classify the review.") and a[differ[0]].inputs["text"] in pair["prompt"]
    )
    assert pair["source"] == "pairwise" and pair["chosen_run"] == fs.id
    # a correct and an incorrect label on two answers to one example make a pair too
    add_label(store, zs, differ[1], "correct")
    add_label(store, fs, differ[1], "incorrect")
    pairs = preference_pairs(store, zs.task_name)
    from_labels = [p for p in pairs if p["source"] == "labels"]
    assert [(p["chosen"], p["rejected"]) for p in from_labels] == [
        (a[differ[1]].answer, b[differ[1]].answer)
    ]
    path = tmp_path / "prefs.jsonl"
    assert write_jsonl(pairs, path) == 2
    assert [json.loads(line)["source"] for line in path.read_text().splitlines()] == ["pairwise", "labels"]


# -- the human metric ----------------------------------------------------------------------------------------


def test_human_metric_needs_labels_then_scores_by_them(study, make_task, workspace):
    store, runs = study
    with pytest.raises(TaskfitError, match="no reviewed answers"):
        build_metric("human", {}, workspace)
    zs = runs["zero_shot"]
    preds = store.predictions(zs.id, with_trace=False)
    # the reviewer disagrees with the gold label on r0 and agrees on r1
    add_label(store, zs, "r0", "correct" if preds[0].score == 0 else "incorrect")
    add_label(store, zs, "r1", "correct" if preds[1].score == 1 else "incorrect")
    with pytest.raises(TaskfitError, match="unknown option 'fallbak'"):
        build_metric("human", {"fallbak": "accuracy"}, workspace)
    _, table = run_study(make_task(metrics=["human", "accuracy"]), workspace=workspace, strategy_names=["zero_shot"])
    (row,) = table
    scored = {p.example_id: p.metrics for p in store.predictions(row.run_id, with_trace=False)}
    assert scored["r0"]["human"] == 1 - preds[0].score and scored["r1"]["human"] == preds[1].score
    assert all(scored[f"r{i}"]["human"] == 0.0 for i in range(2, 8))  # unreviewed, no fallback
    # with a fallback, unreviewed answers take the fallback metric's score
    _, table = run_study(
        make_task(metrics=[{"human": {"fallback": "accuracy", "task": "tiny"}}]), workspace=workspace, strategy_names=["zero_shot"]
    )
    scored = {p.example_id: p.score for p in store.predictions(table[0].run_id, with_trace=False)}
    assert scored["r0"] == 1 - preds[0].score
    assert all(scored[p.example_id] == p.score for p in preds[1:])


def test_gather_evidence_on_stored_runs_has_label_margins(study):
    store, runs = study
    preds = {r.id: store.predictions(r.id) for r in runs.values()}
    pool = gather_evidence(preds, labels(store.eng, "tiny"))
    assert len(pool) == 8 and all(len(e.confidences) == 2 for e in pool)
    queue = order_queue(pool)
    differ = {e.example_id for e in pool if len({a.lower() for a in e.answers.values()}) > 1}
    assert {it.example_id for it in queue[: len(differ)]} == differ


@pytest.mark.slow
def test_queue_and_review_on_the_bundled_model(workspace):
    """sst2 with the real 135M model on 16 rows: margins come from stored label log-likelihoods, the queue
    puts the examples where zero_shot and few_shot_balanced disagree first, and the UI's labels score the
    run."""
    from fastapi.testclient import TestClient

    from taskfit.ui.app import create_app

    _, table = run_study(
        "examples/sst2/task.yaml", workspace=workspace, strategy_names=["zero_shot", "few_shot_balanced"], limit=16
    )
    store = workspace.runs
    preds = {r.run_id: store.predictions(r.run_id) for r in table}
    pool = gather_evidence(preds, {})
    assert len(pool) == 16 and all(len(e.confidences) == 2 and 0 <= min(e.confidences.values()) for e in pool)
    queue = order_queue(pool)
    differ = {e.example_id for e in pool if len(set(e.answers.values())) > 1}
    assert {it.example_id for it in queue[: len(differ)]} == differ
    # within the agreeing examples, the least confident come first
    agree = [it for it in queue if it.example_id not in differ]
    assert [it.low_confidence for it in agree] == sorted((it.low_confidence for it in agree), reverse=True)
    local = "http://127.0.0.1:8765"  # the app's own origin: loopback Host, and posts say where they come from
    client = TestClient(create_app(workspace), base_url=local, headers={"Origin": local})
    run_id = table[0].run_id
    first = queue[0].example_id
    assert (
        client.post("/label", data={"run_id": run_id, "example_id": first, "verdict": "correct"}).status_code
        == 200
    )
    counts = client.get(f"/api/counts/{run_id}").json()
    assert counts["labelled"] == 1 and counts["correct"] == 1
    # an example leaves the queue once every distinct answer to it has a label
    assert f'id="remaining">{16 - (first not in differ)}<' in client.get("/queue").text
