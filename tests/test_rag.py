"""The rag strategy with the scripted model: retrieved context in the prompt, recall@k stored and reported."""

import pytest
from conftest import write_jsonl

from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms

DOCS = [
    {"doc_id": "fr", "title": "France", "text": "Paris is the capital and largest city of France."},
    {"doc_id": "jp", "title": "Japan", "text": "Tokyo is the capital of Japan and its most populous city."},
    {"doc_id": "eg", "title": "Egypt", "text": "The Nile flows north through Egypt into the Mediterranean Sea."},
    {"doc_id": "br", "title": "Brazil", "text": "Brasilia replaced Rio de Janeiro as the capital of Brazil in 1960."},
]
QUESTIONS = [
    {"id": "q1", "question": "What is the capital of France?", "answer": "Paris", "doc_id": "fr"},
    {"id": "q2", "question": "Which river flows through Egypt?", "answer": "Nile", "doc_id": "eg"},
    {"id": "q3", "question": "When did Brasilia become the capital of Brazil?", "answer": "1960", "doc_id": ["br"]},
    {"id": "q4", "question": "Which city is the capital of Japan?", "answer": "Tokyo", "doc_id": "jp"},
]


def _qa_task(make_task, tmp_path, rag: dict):
    write_jsonl(tmp_path / "kb" / "docs.jsonl", DOCS)
    write_jsonl(tmp_path / "qa" / "test.jsonl", QUESTIONS)
    # the scripted model answers only when the passage holding the answer is in its prompt
    script = {"replies": {"Paris is the capital": "Paris", "The Nile flows": "Nile", "in 1960": "1960"},
              "default": "I don't know."}
    return make_task(data={"test": "qa/test.jsonl"}, inputs=["question"], output="answer", labels=None,
                     metrics=["exact_match"], prompt={"instruction": "Answer briefly."},
                     strategies=[{"name": "zero_shot", "id": "closed_book"}, {"name": "rag", "docs": "kb/docs.jsonl",
                                                                          "gold_field": "doc_id", **rag}],
                     models=[{"backend": "scripted", "name": "fake", "script": script}])


def _run(workspace, path):
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    return workspace.runs, runs


def test_rag_puts_passages_in_the_prompt_and_reports_recall(make_task, tmp_path, workspace):
    store, runs = _run(workspace, _qa_task(make_task, tmp_path, {"k": 1, "retriever": "hybrid"}))
    table = {r.strategy: r for r in rows(workspace, runs)}
    rag_run = next(r for r in runs if r.strategy == "rag")
    preds = {p.example_id: p for p in store.predictions(rag_run.id)}
    (call,) = preds["q1"].trace["calls"]
    user = call["messages"][-1]["content"]
    assert user.startswith("Answer the question using only the context below.")
    assert "Context:\n[1] France: Paris is the capital and largest city of France.\n\nAnswer briefly." in user
    assert user.endswith("Question: What is the capital of France?")
    assert preds["q1"].trace["details"]["retrieved"] == ["fr"]
    assert all(p.metrics["recall@1"] == 1.0 for p in preds.values())
    assert [preds[q].answer for q in ("q1", "q2", "q3")] == ["Paris", "Nile", "1960"]
    assert table["rag"].metrics == {"exact_match": 0.75, "recall@1": 1.0}
    assert table["closed_book"].score == 0.0 and "recall@1" not in table["closed_book"].metrics


def test_recall_counts_misses_and_options_shape_the_prompt(make_task, tmp_path, workspace):
    # a query of the answer field alone finds only the passages that contain the answer word
    path = _qa_task(make_task, tmp_path, {"k": 2, "retriever": "bm25", "query_template": "{{ answer }}",
                                          "instruction": "", "system": "Use the passages."})
    # q4 has two gold passages, only one of which mentions Tokyo: recall 0.5
    write_jsonl(tmp_path / "qa" / "test.jsonl", [*QUESTIONS[:3], {**QUESTIONS[3], "doc_id": ["jp", "eg"]}])
    store, runs = _run(workspace, path)
    rag_run = next(r for r in runs if r.strategy == "rag")
    preds = {p.example_id: p for p in store.predictions(rag_run.id)}
    assert preds["q4"].trace["details"]["retrieved"] == ["jp", "fr"]  # no other match: collection order
    messages = preds["q4"].trace["calls"][0]["messages"]
    assert messages[0] == {"role": "system", "content": "Use the passages."}
    assert messages[1]["content"].startswith("Context:\n[1] Japan: Tokyo")
    assert {k: p.metrics["recall@2"] for k, p in preds.items()} == {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.5}
    (row,) = [r for r in rows(workspace, runs) if r.strategy == "rag"]
    assert row.metrics["recall@2"] == pytest.approx(0.875)


def test_rag_with_label_scoring(make_task, tmp_path, workspace):
    write_jsonl(tmp_path / "kb.jsonl", [{"doc_id": "g", "text": "great means positive"},
                                        {"doc_id": "t", "text": "terrible means negative"}])
    path = make_task(strategies=[{"name": "rag", "docs": "kb.jsonl", "k": 1, "retriever": "bm25"}])
    store, (run,) = _run(workspace, path)
    preds = {p.example_id: p for p in store.predictions(run.id)}
    assert preds["r0"].answer == "positive" and preds["r3"].answer == "negative"
    assert preds["r3"].trace["calls"][0]["kind"] == "score"
    assert "[1] terrible means negative" in preds["r3"].trace["calls"][0]["messages"][-1]["content"]
    assert "recall@1" not in preds["r0"].metrics  # no gold_field, no recall


def test_missing_docs_file_names_the_path(make_task, workspace):
    path = make_task(strategies=[{"name": "rag", "docs": "nowhere/docs.jsonl"}])
    with pytest.raises(TaskfitError, match=r"nowhere/docs\.jsonl: data file not found"):
        _run(workspace, path)


def test_unknown_gold_id_is_an_error_naming_the_row(make_task, tmp_path, workspace):
    path = _qa_task(make_task, tmp_path, {"retriever": "bm25"})
    write_jsonl(tmp_path / "qa" / "test.jsonl", [*QUESTIONS, {"id": "q5", "question": "?", "answer": "x",
                                                              "doc_id": "zz"}])
    with pytest.raises(TaskfitError, match=r"test\.jsonl:5: rag: gold document id\(s\) 'zz' of example 'q5'"):
        _run(workspace, path)
