"""Unit costs of a local model: seconds per forward token, per generated token and per training token.

A run's wall time moves with machine load (2-5x on busy shared cores: OpenMP threads spin while they wait), so
costs price a row's work (tokens encoded, generated and trained on) at a unit cost measured the way ``timeit``
measures: a short fixed workload (a batch of 8 x 64 tokens) at the current torch thread count, one warm-up,
then ``REPEATS`` timed repeats of which the minimum counts (the run least disturbed by other load). It is
measured once per model, device and thread count and kept in the workspace's ``unit_costs`` table, so a row
evaluated later on a busy machine is priced with the same unit cost as one evaluated on a quiet one.

A backend opts in with a ``calibrate(repeats)`` method returning ``{kind: (seconds per token, spread)}``;
rows of other backends are priced from their measured time. torch is imported inside the functions that
measure: the store and the types are read by the leaderboard, which must not load torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from taskfit.db import upsert

KINDS = ("forward", "generate", "train")  # a prompt token encoded, a token generated, a token trained on
BATCH, LENGTH = 8, 64  # the fixed workload: 8 rows of 64 tokens, about a batch of short prompts
DECODE_STEPS = 8  # tokens generated per row when timing decode steps with the KV cache
REPEATS = 5
# the uncertainty of a calibrated cost is the spread of its repeats, never below this (the minimum of a few
# repeats still moves a little between calibrations) nor above costs.TIME_TOLERANCE (what measured time gets)
MIN_UNCERTAINTY = 0.05


@dataclass(frozen=True)
class UnitCost:
    """Seconds one token of ``kind`` costs on ``model_id`` at ``device`` with ``threads`` torch threads."""

    model_id: str
    device: str
    threads: int
    kind: str  # forward | generate | train
    seconds_per_token: float
    spread: float  # second fastest / fastest repeat - 1: how reproducible the minimum is
    repeats: int
    batch: str  # the workload, e.g. "8x64"


class UnitCostStore:
    """The ``unit_costs`` table: one unit cost per model, device, thread count and kind."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def put(self, costs: list[UnitCost]) -> None:
        rows = [{**cost.__dict__, "created": time.time()} for cost in costs]
        with self.engine.begin() as conn:
            upsert(conn, "unit_costs", rows, ("model_id", "device", "threads", "kind"))

    def get(self, model_id: str, device: str, threads: int | None = None) -> dict[str, UnitCost]:
        """The unit costs of ``model_id`` on ``device`` by kind (the latest thread count's when None)."""
        sql = ("SELECT model_id, device, threads, kind, seconds_per_token, spread, repeats, batch FROM unit_costs "
               "WHERE model_id = :m AND device = :d" + ("" if threads is None else " AND threads = :t")
               + " ORDER BY created")
        with self.engine.connect() as conn:
            found = conn.execute(text(sql), {"m": model_id, "d": device, "t": threads}).all()
        return {row.kind: UnitCost(*row) for row in found}  # later rows replace earlier ones


def timed_min(step: Callable[[], Any], repeats: int = REPEATS, sync: Callable[[], None] = lambda: None
              ) -> tuple[float, float]:
    """The fastest of ``repeats`` timed calls of ``step`` after one warm-up, and their spread (``_fastest``)."""
    step()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return _fastest(times, 1)


def _fastest(times: list[float], tokens: int) -> tuple[float, float]:
    """Seconds per token of the fastest repeat, and how far the second fastest is from it: how reproducible
    the minimum is (the slowest repeats only say how busy the machine was, which the minimum leaves out)."""
    first, *rest = sorted(times)
    spread = rest[0] / first - 1 if rest and first > 0 else 0.0
    return first / tokens, spread


def calibrated(store: UnitCostStore, backend: Any, repeats: int = REPEATS) -> dict[str, UnitCost]:
    """``backend``'s unit costs: from the store, else measured now (its ``calibrate`` hook) and stored.
    Empty for a backend with no hook (a remote API, a plugin that does not calibrate)."""
    measure = getattr(backend, "calibrate", None)
    if measure is None:
        return {}
    import torch  # a backend with a calibration hook runs torch already

    device, threads = str(getattr(backend, "device", "cpu")), torch.get_num_threads()
    known = store.get(backend.model_id, device, threads)
    if known:
        return known
    costs = [UnitCost(backend.model_id, device, threads, kind, seconds, spread, repeats, f"{BATCH}x{LENGTH}")
             for kind, (seconds, spread) in measure(repeats).items()]
    store.put(costs)
    return {c.kind: c for c in costs}


def _sync(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _tokens(model, device):
    import torch

    vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)
    generator = torch.Generator().manual_seed(0)  # the same tokens every time
    ids = torch.randint(3, max(4, vocab), (BATCH, LENGTH), generator=generator)
    return ids.to(device), torch.ones_like(ids).to(device)


def measure_forward(model, device, repeats: int = REPEATS) -> tuple[float, float]:
    """Seconds per token of a batched forward pass (prefill) of 8 x 64 tokens, and the repeats' spread."""
    import inspect

    import torch

    ids, mask = _tokens(model, device)
    # scoring reads the logits of a prompt's last position only: the output layer over every position (a 49k
    # vocabulary) would cost more than the rest of a small model
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        best, spread = timed_min(lambda: model(input_ids=ids, attention_mask=mask, **last), repeats, _sync(device))
    return best / ids.numel(), spread


def measure_decode(model, device, repeats: int = REPEATS, cache_arg: str = "past_key_values") -> tuple[float, float]:
    """Seconds per generated token: ``DECODE_STEPS`` single-token steps with the KV cache after an 8 x 64
    prefill (the prefill itself is not timed), and the repeats' spread. ``cache_arg``: the name the model's
    forward takes its KV cache under (``hf.kv_cache_arg``)."""
    import torch

    ids, mask = _tokens(model, device)

    with torch.inference_mode():
        def prefill():
            return model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)[cache_arg]

        def decode(cache) -> None:
            step_mask, token = mask, ids[:, -1:]
            for _ in range(DECODE_STEPS):
                step_mask = torch.cat([step_mask, step_mask[:, -1:]], dim=1)
                out = model(input_ids=token, attention_mask=step_mask, use_cache=True, **{cache_arg: cache})
                cache, token = out[cache_arg], out.logits[:, -1:].argmax(-1)

        times = []
        for _ in range(repeats + 1):  # the first is the warm-up
            cache = prefill()
            _sync(device)()
            t0 = time.perf_counter()
            decode(cache)
            _sync(device)()
            times.append(time.perf_counter() - t0)
    return _fastest(times[1:], BATCH * DECODE_STEPS)


def uncertainty(spreads: list[float], ceiling: float) -> float:
    """The relative uncertainty of a cost priced with unit costs of these ``spreads``: the largest, at least
    ``MIN_UNCERTAINTY`` and at most ``ceiling`` (the uncertainty of measured time)."""
    return min(ceiling, max([MIN_UNCERTAINTY, *spreads]))
