"""Micro-batching for a local model: model calls from concurrent requests become one backend batch.

Every request runs its strategy in its own thread; the strategy's calls land here and wait. One worker
thread owns the model: it takes what is queued (after waiting ``window_s`` for company when it finds only
one caller), sends all queued generate requests in one ``backend.generate`` call and all score requests in
one ``backend.score`` call, and hands each caller its results. Under load the queue fills while the model
works, so batches grow with the load without any waiting. Batching at the call level rather than the
request level means multi-call strategies (calibration, tool loops, self-consistency) batch step by step
across requests, and each request keeps its own prompt, history and tools.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from taskfit.backends import Backend, GenerateRequest, GenerateResult, ScoreRequest, ScoreResult

BATCH_HISTORY = 1000


class BatchingBackend:
    """A Backend that merges concurrent callers' requests; the wrapped backend is only called from one thread."""

    def __init__(self, backend: Backend, *, max_batch: int = 32, window_s: float = 0.005):
        self.inner = backend
        self.model_id = backend.model_id
        self.supports_score = backend.supports_score
        self.supports_tools = getattr(backend, "supports_tools", False)
        self.local = backend.local
        self.batch_size = max_batch  # LM hands us up to this many requests per call
        self.max_batch = max_batch
        self.window_s = window_s
        # requests per backend call of the latest BATCH_HISTORY calls, for the benchmark and tests
        self.batches: deque[int] = deque(maxlen=BATCH_HISTORY)
        self._queue: queue.Queue[tuple[str, list[Any], Future] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="taskfit-batcher", daemon=True)
        self._worker.start()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "serve_batching": {"max_batch": self.max_batch, "window_s": self.window_s}}

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        return self._submit("generate", requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self._submit("score", requests)

    def close(self) -> None:
        """Stop the worker after the calls already queued."""
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _submit(self, kind: str, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        done: Future = Future()
        self._queue.put((kind, list(requests), done))
        return done.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            size = len(first[1])
            deadline = time.perf_counter() + self.window_s
            while size < self.max_batch:
                try:
                    # only wait for company while the queue is empty; under load it is never empty
                    timeout = max(0.0, deadline - time.perf_counter())
                    item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                items.append(item)
                size += len(item[1])
            for kind in ("generate", "score"):
                group = [it for it in items if it[0] == kind]
                if group:
                    self._call(kind, group)

    def _call(self, kind: str, items: list[tuple[str, list[Any], Future]]) -> None:
        # identical requests from different callers (the same calibration prompt, a repeated question) run once
        unique: dict[str, Any] = {}
        keys = []
        for _, requests, _ in items:
            for r in requests:
                k = json.dumps(asdict(r), sort_keys=True, default=str)
                unique.setdefault(k, r)
                keys.append(k)
        try:
            fn = self.inner.generate if kind == "generate" else self.inner.score
            results = dict(zip(unique, fn(list(unique.values())), strict=True))
        except BaseException as e:  # a backend bug fails the callers of this batch, not the worker
            for _, _, done in items:
                done.set_exception(e)
            return
        self.batches.append(len(unique))
        pos = 0
        for _, requests, done in items:
            done.set_result([results[k] for k in keys[pos:pos + len(requests)]])
            pos += len(requests)
