"""The training loop: length-grouped batches, AdamW with warmup and linear decay, checkpoints, resume, on one
process or several (accelerate: DDP, FSDP, DeepSpeed ZeRO), with optional bf16 autocast.

Owned here rather than delegated to ``transformers.Trainer`` because the batching is where CPU time goes:
rows of similar length are batched together (padding to the longest row of a *sorted* group wastes far
less than padding a random batch), and because a checkpoint must restore everything that decides the result
(trainable weights, optimizer, schedule, RNG states, position in the epoch) so that an interrupted run ends
exactly where an uninterrupted one would.

On several processes ``batch_size`` stays the global batch: each process takes every n-th row of it, and its
loss is its rows' share of the global batch's summed token loss, so the averaged gradient, and so the loss
curve, are those of one process running the whole batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskfit.errors import TaskfitError
from taskfit.tuning.data import IGNORE, TrainRow
from taskfit.tuning.methods import learns_virtual_tokens


@dataclass
class TrainConfig:
    epochs: float
    max_steps: int | None
    lr: float
    batch_size: int
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    seed: int = 0
    save_steps: int = 50
    group_by_length: bool = True
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no, bf16 or fp16: autocast of the forward pass (weights stay as loaded)
    log_every: int = 10  # on a GPU, losses are read back every N steps (each read waits for the device)


@dataclass
class TrainResult:
    steps: int
    epochs: float
    train_time_s: float
    tokens: int  # real (non-padding) tokens processed
    padded_tokens: int  # tokens including padding
    peak_mem_mb: float
    mem_growth_mb: float = 0.0  # peak minus memory in use when training started
    curve: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    processes: int = 1
    state_dict: dict[str, Any] | None = None  # the gathered weights, when sharded across processes
    cpu_time_s: float = 0.0  # this process's CPU time while training (steadier than wall time on a shared CPU)
    process_tokens: int = 0  # real tokens this process ran (its share of every batch)


    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_time_s if self.train_time_s else 0.0


def batch_order(lengths: list[int], batch_size: int, epoch: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Row indices per batch for one epoch; deterministic in (seed, epoch).

    Grouped by length: shuffle, cut into mega-batches of 64 batches, sort each by length, cut into batches,
    shuffle the batches. Rows of a batch then have similar lengths, and the order stays random."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    idx = torch.randperm(len(lengths), generator=g).tolist()
    if not group_by_length:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    mega = batch_size * 64
    batches = []
    for m in range(0, len(idx), mega):
        group = sorted(idx[m:m + mega], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


def collate(rows: list[TrainRow], pad_id: int, device: torch.device, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the longest row of the batch: on the right, or on the left (every row then ends at the same
    position, so the answer tokens of a causal batch are its last few columns)."""
    if left:
        return _collate_left(rows, pad_id, device)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    causal = isinstance(rows[0].labels, list)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long) if causal else None
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r.input_ids)
        mask[k, :len(r)] = 1
        if causal:
            labels[k, :len(r)] = torch.tensor(r.labels)
    if not causal:
        labels = torch.tensor([r.labels for r in rows], dtype=torch.long)
    return {"input_ids": _to(ids, device), "attention_mask": _to(mask, device), "labels": _to(labels, device)}


def _collate_left(rows: list[TrainRow], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, width - len(r):] = torch.tensor(r.input_ids)
        mask[k, width - len(r):] = 1
        labels[k, width - len(r):] = torch.tensor(r.labels)
    # positions count real tokens only, so a left-padded row is computed exactly as it would be alone
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # the first labelled column, known here on the host, so the loss never waits on the device to find it
    first = min((width - len(r) + next((k for k, v in enumerate(r.labels) if v != IGNORE), len(r))
                 for r in rows), default=width - 1)
    return {"input_ids": _to(ids, device), "attention_mask": _to(mask, device),
            "position_ids": _to(positions, device), "labels": _to(labels, device), "answer_from": min(first, width - 1)}


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host to device; on CUDA from pinned memory without waiting for the copy."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Causal LM loss on the labelled (answer) tokens of a left-padded batch, with the output layer applied
    to the last columns only: with a 49k-token vocabulary, logits for every prompt position would cost more
    memory and time than the rest of the model (what ``model(**batch).loss`` computes)."""
    labels = batch["labels"]
    first = batch.get("answer_from")
    if first is None:
        labelled = (labels != IGNORE).any(dim=0).nonzero()
        first = int(labelled[0]) if len(labelled) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # positions first-1 .. end predict tokens first .. end
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()
    target = labels[:, -keep + 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=IGNORE)


def uses_answer_loss(model, rows: list[TrainRow]) -> bool:
    """Left padding + last-columns loss suits causal rows whose loss covers a short answer (sft), on models
    whose forward takes position ids as is (PEFT prompt learning prepends virtual tokens: not those)."""
    if not rows or not isinstance(rows[0].labels, list):
        return False
    if learns_virtual_tokens(model):
        return False
    return sum(lab != IGNORE for lab in rows[0].labels) < len(rows[0]) // 2


class PeakMemory:
    """Peak memory while a block runs: CUDA's allocator peak on a GPU, else the process's resident set (RSS)
    sampled every 20 ms (the process-lifetime ``ru_maxrss`` would include everything before training)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = self.start_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.peak_bytes = self.start_bytes = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def growth_mb(self) -> float:
        """Peak minus what was in use when the block started (the block's own memory)."""
        return (self.peak_bytes - self.start_bytes) / 2**20


def release_free_memory(device: torch.device) -> None:
    """Hand memory freed by earlier work (the plan's probe, the forgetting check) back to the system, so the
    training peak is training's own: glibc keeps freed heap pages mapped until asked (``malloc_trim``)."""
    import ctypes
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused kernel on CUDA (one launch for all tensors instead of several per tensor)."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")


def total_steps(n_rows: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(math.ceil(n_rows / cfg.batch_size) / cfg.grad_accum)
    return cfg.max_steps or max(1, math.ceil(per_epoch * cfg.epochs))


def loss_targets(rows: list[TrainRow]) -> int:
    """How many targets a batch's mean loss averages over: predicted labelled tokens (a row's first token has
    no prediction), or rows (classification)."""
    if rows and isinstance(rows[0].labels, list):
        return sum(lab != IGNORE for r in rows for lab in r.labels[1:])
    return len(rows)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Gradient checkpointing: recompute each layer's activations in the backward pass instead of keeping them
    (about a third more compute for activation memory of one layer instead of all)."""
    kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs (adapters) and under DDP
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise TaskfitError(f"{type(model).__name__} does not support gradient checkpointing",
                           field="tuning[].gradient_checkpointing")


def train(model: torch.nn.Module, rows: list[TrainRow], cfg: TrainConfig, *, pad_id: int, device: torch.device,
          checkpoint_dir: Path | None = None, on_step: Callable[[dict[str, float]], None] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train ``model``'s trainable parameters on ``rows``; resume from ``checkpoint_dir`` when it holds one.

    Runs on this process alone, or with the other processes ``accelerate launch`` started (each calls
    ``train`` with the same arguments). ``stop_after`` ends the run early after that many optimizer steps (as a
    crash would), for tests and probes; the checkpoint is written first."""
    from taskfit.tuning import distributed

    torch.manual_seed(cfg.seed)
    acc = distributed.accelerator(device, cfg.mixed_precision)
    device = acc.device
    rank, world = acc.process_index, acc.num_processes
    sharded = distributed.sharded(acc)
    left = uses_answer_loss(model, rows)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    if acc.state.deepspeed_plugin is not None:  # no dataloader goes through accelerate: say the batch here
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = math.ceil(cfg.batch_size / world)
        ds["gradient_accumulation_steps"] = cfg.grad_accum
        ds["gradient_clipping"] = cfg.max_grad_norm
    opt = make_optimizer(params, cfg, device)
    model, opt = acc.prepare(model, opt)
    steps = total_steps(len(rows), cfg)
    warmup = int(steps * cfg.warmup_ratio)
    # not prepared: accelerate's scheduler wrapper advances once per process and step
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt.optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    lengths = [len(r) for r in rows]
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    state = {"step": 0, "batch": 0, "curve": [], "tokens": 0, "padded": 0, "time": 0.0}
    ckpt = checkpoint_dir / "last.pt" if checkpoint_dir else None
    resumed_from = 0
    if ckpt and ckpt.exists():
        state = _load_checkpoint(ckpt, acc.unwrap_model(model), opt, sched, rank) if not sharded else \
            _load_sharded(acc, ckpt, sched)
        resumed_from = state["step"]
    model.train()
    release_free_memory(device)
    pending: list[tuple[dict[str, float], torch.Tensor]] = []  # points whose loss is still on the device

    def flush() -> None:
        if not pending:
            return
        losses = torch.stack([loss for _, loss in pending])
        if world > 1:
            losses = acc.reduce(losses, reduction="sum")
        for (point, _), value in zip(pending, losses.tolist(), strict=True):
            point["loss"] = value
            state["curve"].append(point)
            if on_step:
                on_step(point)
        pending.clear()

    with PeakMemory(device) as mem:
        t0 = time.perf_counter() - state["time"]
        c0 = time.process_time()
        orders: dict[int, list[list[int]]] = {}
        step_loss = torch.zeros((), device=device)
        micro = 0
        while state["step"] < steps:
            epoch, b = divmod(state["batch"], per_epoch)
            if epoch not in orders:
                orders = {epoch: batch_order(lengths, cfg.batch_size, epoch, cfg.seed, cfg.group_by_length)}
            batch_rows = [rows[i] for i in orders[epoch][b]]
            mine = batch_rows[rank::world] or batch_rows[:1]  # a process with no row of a short last batch
            weight = len(batch_rows[rank::world]) and loss_targets(mine) / max(1, loss_targets(batch_rows))
            inputs = collate(mine, pad_id, device, left=left)
            state["batch"] += 1
            boundary = not (state["batch"] % cfg.grad_accum and state["batch"] % per_epoch)
            acc.gradient_state._set_sync_gradients(boundary)  # accumulate locally between optimizer steps
            with acc.no_sync(model) if not boundary else contextlib.nullcontext():
                loss = answer_loss(model, inputs) if left else model(**inputs).loss
                share = loss * weight  # this process's part of the global batch's mean loss
                acc.backward(share * world / cfg.grad_accum)  # DDP averages gradients over processes
            state["tokens"] += sum(len(r) for r in batch_rows)  # counted on the host: no device sync
            state["own_tokens"] = state.get("own_tokens", 0) + sum(len(r) for r in batch_rows[rank::world])
            state["padded"] += len(batch_rows) * max(len(r) for r in batch_rows)
            step_loss = step_loss + share.detach().float()
            micro += 1
            if not boundary:
                continue
            acc.clip_grad_norm_(params if not sharded else model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            pending.append(({"step": state["step"], "epoch": round(state["batch"] / per_epoch, 3),
                             "lr": sched.get_last_lr()[0], "time_s": round(time.perf_counter() - t0, 2)},
                            step_loss / micro))
            step_loss, micro = torch.zeros((), device=device), 0
            done = state["step"] >= steps
            stopping = stop_after is not None and state["step"] >= stop_after and not done
            # the finished model is saved by the caller; a checkpoint is only a resume point (for full
            # fine-tuning it is weights + two AdamW moments: writing one at the end would cost seconds)
            saving = ckpt and not done and (state["step"] % cfg.save_steps == 0 or state["step"] == stop_after)
            if device.type != "cuda" or done or saving or stopping or state["step"] % cfg.log_every == 0:
                flush()
            if saving:
                state["time"] = time.perf_counter() - t0
                if sharded:
                    _save_sharded(acc, ckpt, sched, state)
                else:
                    _save_checkpoint(ckpt, acc, acc.unwrap_model(model), names, opt, sched, state)
            if stopping:
                break
        flush()
        elapsed = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
    gathered = acc.get_state_dict(model) if sharded else None
    # the caller's model again: without the DDP wrapper and the autocast that ``prepare`` put on its forward
    acc.unwrap_model(model, keep_fp32_wrapper=False).eval()
    return TrainResult(steps=state["step"], epochs=state["batch"] / per_epoch, train_time_s=elapsed,
                       tokens=state["tokens"], padded_tokens=state["padded"], peak_mem_mb=mem.peak_mb,
                       mem_growth_mb=mem.growth_mb, curve=state["curve"], resumed_from=resumed_from,
                       processes=world, state_dict=gathered, cpu_time_s=cpu_s,
                       process_tokens=state.get("own_tokens", 0))


def step_cost(model: torch.nn.Module, rows: list[TrainRow], cfg: TrainConfig, *, pad_id: int,
              device: torch.device, repeats: int) -> tuple[float, float]:
    """Seconds per (padded) token of one optimizer step (forward, loss, backward, step) on the first 8 training
    rows, the fastest of ``repeats`` after a warm-up, and the repeats' spread (taskfit.calibration). The
    trainable weights are put back afterwards, so the trained model is unchanged."""
    from taskfit.calibration import BATCH, timed_min

    left = uses_answer_loss(model, rows)
    inputs = collate(rows[:BATCH], pad_id, device, left=left)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    opt = make_optimizer(params, cfg, device)
    was_training = model.training
    model.train()

    def step() -> None:
        loss = answer_loss(model, inputs) if left else model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        best, spread = timed_min(step, repeats, torch.cuda.synchronize if device.type == "cuda" else lambda: None)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        model.train(was_training)
    return best / inputs["input_ids"].numel(), spread


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _save_sharded(acc, path: Path, sched, state) -> None:
    """FSDP / ZeRO: each process writes its shard of weights and optimizer states (accelerate's format); the
    main process writes the position in the data and the schedule."""
    acc.save_state(str(path.parent / "sharded"))
    if acc.is_main_process:
        _atomic_save({"scheduler": sched.state_dict(), "state": {k: v for k, v in state.items()}}, path)
    acc.wait_for_everyone()


def _load_sharded(acc, path: Path, sched) -> dict[str, Any]:
    acc.load_state(str(path.parent / "sharded"))
    blob = torch.load(path, weights_only=True)
    sched.load_state_dict(blob["scheduler"])
    return blob["state"]


def _atomic_save(blob: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def _save_checkpoint(path: Path, acc, model, names, opt, sched, state) -> None:
    """Weights and optimizer states are the same on every data-parallel process: the main process writes them,
    with every process's RNG states (dropout differs per process)."""
    from accelerate.utils import gather_object

    rngs = gather_object([_rng_state()]) if acc.num_processes > 1 else [_rng_state()]
    if acc.is_main_process:
        params = dict(model.named_parameters())
        _atomic_save({
            "trainable": {n: params[n].detach().cpu() for n in names},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs,
            "state": dict(state),
        }, path)
    acc.wait_for_everyone()


def _numpy_state() -> tuple:
    """numpy's global RNG state as plain values (its key array becomes a list of ints)."""
    kind, key, *rest = np.random.get_state()
    return (kind, key.tolist(), *rest)


def _load_checkpoint(path: Path, model, opt, sched, rank: int = 0) -> dict[str, Any]:
    # weights_only: a checkpoint is tensors and plain values, so loading one never runs pickled code
    try:
        blob = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise TaskfitError(f"the checkpoint is not a taskfit training checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); delete it to train from the start",
                           file=str(path)) from None
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in blob["trainable"].items():
            params[n].copy_(t)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    rngs = blob["rng"] if isinstance(blob["rng"], list) else [blob["rng"]]
    rng = rngs[rank] if rank < len(rngs) else rngs[0]  # resumed on more processes than it was saved from
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    kind, key, *rest = rng["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), *rest))
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return blob["state"]
