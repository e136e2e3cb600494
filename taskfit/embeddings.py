"""Sentence embeddings with the bundled all-MiniLM-L6-v2 (kNN example selection, later retrieval)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)
def _encoder(path: str | None):
    from sentence_transformers import SentenceTransformer

    from taskfit import bundled

    return SentenceTransformer(str(path or bundled.minilm_dir()), device="cpu")


def embed(texts: list[str], model_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-normalised embeddings, one row per text (cosine similarity = dot product)."""
    vectors = _encoder(model_path).encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                          show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)
