"""Retrieval over a small collection: BM25, dense, their fusion, recall@k, collection file errors."""

import json
import os

import pytest

from taskfit import retrieval
from taskfit.errors import TaskfitError
from taskfit.retrieval import Document, Retriever, load_documents, recall_at_k

DOCS = [
    Document("cat", "The cat sat on the warm windowsill and purred all afternoon.", "Cats"),
    Document("bridge", "The Øresund Bridge links Copenhagen and Malmö across the strait.", "Bridges"),
    Document("cook", "Simmer the onions slowly in butter until they turn golden brown.", "Cooking"),
    Document("stock", "Shares fell sharply after the company reported weak quarterly earnings.", "Markets"),
]


def _ids(hits):
    return [d.id for d, _ in hits]


def test_bm25_finds_the_document_sharing_rare_words():
    (hits,) = Retriever(DOCS, "bm25").search(["Which bridge connects Copenhagen with Malmö?"], k=2)
    assert _ids(hits)[0] == "bridge" and hits[0][1] > hits[1][1]


def test_dense_finds_a_paraphrase_without_shared_words():
    query = "How do I caramelise shallots in a pan?"
    assert Retriever(DOCS, "bm25").scores([query]).max() == 0  # no word in common with any document
    (hits,) = Retriever(DOCS, "dense").search([query], k=1)
    assert _ids(hits) == ["cook"]


def test_hybrid_ranks_by_both_and_alpha_moves_between_them():
    queries = ["Which bridge connects Copenhagen with Malmö?", "How do I caramelise shallots in a pan?",
               "stock market earnings drop"]
    hybrid = Retriever(DOCS, "hybrid", alpha=0.5).search(queries, k=len(DOCS))
    assert [_ids(h)[0] for h in hybrid] == ["bridge", "cook", "stock"]
    assert all(0.0 <= s <= 1.0 for h in hybrid for _, s in h)
    assert all([s for _, s in h] == sorted((s for _, s in h), reverse=True) for h in hybrid)
    # alpha 0 / 1 give the BM25 / dense orders
    for alpha, method in ((0.0, "bm25"), (1.0, "dense")):
        fused = Retriever(DOCS, "hybrid", alpha=alpha).search(queries[:1], k=len(DOCS))
        alone = Retriever(DOCS, method).search(queries[:1], k=len(DOCS))
        assert _ids(fused[0]) == _ids(alone[0])


def test_search_is_batched_and_k_is_capped():
    hits = Retriever(DOCS, "bm25").search(["cat windowsill", "onions butter", "the of and"], k=10)
    assert [len(h) for h in hits] == [4, 4, 4]
    assert _ids(hits[0])[0] == "cat" and _ids(hits[1])[0] == "cook"
    assert _ids(hits[2]) == ["cat", "bridge", "cook", "stock"]  # only stopwords: no match, collection order


def test_recall_at_k():
    assert recall_at_k(["a", "b", "c"], "b") == 1.0
    assert recall_at_k(["a", "b", "c"], "z") == 0.0
    assert recall_at_k(["a", "b", "c"], ["b", "z"]) == 0.5
    assert recall_at_k(["a", "b", "c"], ["c", "a"]) == 1.0
    with pytest.raises(ValueError):
        recall_at_k(["a"], [])


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_load_documents_reads_fields_and_reports_bad_rows(tmp_path):
    good = json.dumps({"doc_id": "d1", "title": "T", "text": "x y"})
    (doc,) = load_documents(_write(tmp_path / "own.jsonl", [json.dumps({"pid": 7, "body": "z"})]),
                            id_field="pid", text_field="body")
    assert doc.id == "7" and doc.text == "z" and doc.title == ""
    path = _write(tmp_path / "docs.jsonl", [good, json.dumps({"pid": 7, "body": "z"})])
    with pytest.raises(TaskfitError, match=r"docs\.jsonl:2: .*'doc_id'"):
        load_documents(path)
    bad = _write(tmp_path / "bad.jsonl", [good, "", '{"doc_id": "d2", "text": '])
    with pytest.raises(TaskfitError, match=r"bad\.jsonl:3: malformed JSON"):
        load_documents(bad)
    dup = _write(tmp_path / "dup.jsonl", [good, good])
    with pytest.raises(TaskfitError, match=r"dup\.jsonl:2: duplicate document id 'd1' \(also on line 1\)"):
        load_documents(dup)
    with pytest.raises(TaskfitError, match="missing.jsonl"):
        load_documents(tmp_path / "missing.jsonl")


def test_document_embeddings_are_cached_per_file_and_mtime(tmp_path, monkeypatch):
    path = _write(tmp_path / "docs.jsonl", [json.dumps({"doc_id": d.id, "title": d.title, "text": d.text}) for d in DOCS])
    calls = []
    real = retrieval.embed
    monkeypatch.setattr(retrieval, "embed", lambda texts: calls.append(len(texts)) or real(texts))
    first = Retriever.from_file(path, "dense")
    second = Retriever.from_file(path, "hybrid", alpha=0.3)
    assert calls == [4]  # the second retriever reused the document vectors
    assert _ids(first.search(["caramelise shallots"], 1)[0]) == _ids(second.search(["caramelise shallots"], 1)[0])
    assert calls == [4, 1, 1]  # queries are embedded, documents are not
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    Retriever.from_file(path, "dense")
    assert calls[-1] == 4  # an edited file is embedded again
