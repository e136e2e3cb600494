"""A document collection and hybrid retrieval over it: BM25 (bm25s), dense (MiniLM), or both fused.

Hybrid scores are a convex combination of per-query min-max-normalised BM25 and cosine scores,
``alpha * dense + (1 - alpha) * bm25``, rather than reciprocal-rank fusion: RRF throws away how far
ahead a document is (a passage that shares every rare word with the question counts no more than one
that barely beat the runner-up), and a convex combination has been found at least as accurate while
giving ``alpha`` a plain meaning (Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval",
ACM TOIS 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np

from taskfit.dataset import read_rows
from taskfit.embeddings import embed
from taskfit.errors import TaskfitError

Method = Literal["bm25", "dense", "hybrid"]

# path -> ((mtime_ns, fields), vectors): an edited file replaces its entry, so the cache holds one
# matrix per collection a process has used, and several strategies or runs embed each collection once
_vector_cache: dict[str, tuple[tuple, np.ndarray]] = {}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    def passage(self) -> str:
        """Title and text as one string: what is embedded and what a prompt shows."""
        return f"{self.title}: {self.text}" if self.title else self.text


def load_documents(path: Path, id_field: str = "doc_id", text_field: str = "text",
                   title_field: str = "title") -> list[Document]:
    """Read a JSONL (or CSV) collection; the title field is optional, ids must be unique."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, row in read_rows(path):
        for name in (id_field, text_field):
            if row.get(name) in (None, ""):
                raise TaskfitError(f"document has no {name!r} (row has: {', '.join(row) or 'nothing'})",
                                   file=str(path), line=lineno, field=name)
        if not isinstance(row[text_field], str):
            raise TaskfitError(f"document field {text_field!r} must be text, got {type(row[text_field]).__name__}",
                               file=str(path), line=lineno, field=text_field)
        doc_id = str(row[id_field])
        if doc_id in seen:
            raise TaskfitError(f"duplicate document id {doc_id!r} (also on line {seen[doc_id]})",
                               file=str(path), line=lineno, field=id_field)
        seen[doc_id] = lineno
        docs.append(Document(doc_id, row[text_field], str(row.get(title_field) or "")))
    if not docs:
        raise TaskfitError("the document collection is empty", file=str(path))
    return docs


def document_vectors(documents: list[Document], key: tuple | None = None) -> np.ndarray:
    """Unit-normalised embeddings of each document's title + text; cached in memory when ``key`` is given.

    ``key`` is ``(path, stamp)``: the vectors are reused while the stamp (mtime, field names) is unchanged.
    """
    if key is not None:
        path, stamp = key
        hit = _vector_cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    vectors = embed([d.passage() for d in documents])
    if key is not None:
        _vector_cache[path] = (stamp, vectors)
    return vectors


class Retriever:
    """Top-k search over a fixed collection by BM25, dense cosine similarity, or their fusion."""

    def __init__(self, documents: list[Document], method: Method = "hybrid", alpha: float = 0.5,
                 cache_key: tuple | None = None):
        if not documents:
            raise ValueError("a retriever needs at least one document")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.documents, self.method, self.alpha = documents, method, alpha
        self._bm25 = _bm25_index(documents) if method != "dense" else None
        self._vectors = document_vectors(documents, cache_key) if method != "bm25" else None

    @classmethod
    def from_file(cls, path: Path, method: Method = "hybrid", alpha: float = 0.5, *, id_field: str = "doc_id",
                  text_field: str = "text", title_field: str = "title") -> Retriever:
        """A retriever over a collection file, with its embeddings cached per (path, mtime)."""
        docs = load_documents(path, id_field, text_field, title_field)
        stamp = (path.stat().st_mtime_ns, id_field, text_field, title_field)
        return cls(docs, method, alpha, cache_key=(str(path.resolve()), stamp))

    def scores(self, queries: list[str]) -> np.ndarray:
        """One row of document scores per query (higher is more relevant)."""
        if self.method == "bm25":
            return self._bm25_scores(queries)
        if self.method == "dense":
            return self._dense_scores(queries)
        return self.alpha * _min_max(self._dense_scores(queries)) + (1 - self.alpha) * _min_max(self._bm25_scores(queries))

    def search(self, queries: list[str], k: int) -> list[list[tuple[Document, float]]]:
        """The ``k`` best documents for each query, best first, with their scores."""
        if not queries:
            return []
        scores = self.scores(queries)
        k = min(k, len(self.documents))
        out = []
        for row in scores:
            top = np.argsort(-row, kind="stable")[:k]  # stable: ties keep collection order, so runs repeat
            out.append([(self.documents[i], float(row[i])) for i in top])
        return out

    def _bm25_scores(self, queries: list[str]) -> np.ndarray:
        index = self._bm25
        tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        out = np.zeros((len(queries), len(self.documents)), dtype=np.float32)
        for i, toks in enumerate(tokens):
            ids = index.get_tokens_ids(toks)
            if ids:  # a query of only stopwords or unseen words matches nothing
                out[i] = index.get_scores_from_ids(ids)
        return out

    def _dense_scores(self, queries: list[str]) -> np.ndarray:
            return embed(queries) @ self._vectors.T


def _bm25_index(documents: list[Document]):
    index = bm25s.BM25()
    index.index(bm25s.tokenize([d.passage() for d in documents], stopwords="en", show_progress=False),
                show_progress=False)
    return index


def _min_max(scores: np.ndarray) -> np.ndarray:
    """Rescale each row to [0, 1]; a row with no spread (e.g. no BM25 match at all) becomes zeros."""
    lo = scores.min(axis=1, keepdims=True)
    spread = scores.max(axis=1, keepdims=True) - lo
    return np.divide(scores - lo, spread, out=np.zeros_like(scores), where=spread > 0)


def recall_at_k(retrieved_ids: Sequence[str], gold_ids: str | Sequence[str]) -> float:
    """Fraction of the gold ids found among ``retrieved_ids`` (the top k); with one gold id, a hit is 1.0."""
    gold = {gold_ids} if isinstance(gold_ids, str) else set(gold_ids)
    if not gold:
        raise ValueError("recall@k needs at least one gold id")
    return len(gold & set(retrieved_ids)) / len(gold)
