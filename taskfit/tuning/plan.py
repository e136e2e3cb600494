"""Before training: how much memory a run will take at its peak and how long an epoch will last.

Memory is the sum of its parts, each from the model and the data: weights (as loaded, including quantised
ones), gradients and AdamW's two moments for the trainable parameters (fp32), activations kept for the
backward pass (per layer and token from the architecture, times the layers the gradient runs through, for
the largest batch the length-grouped order produces), the output-layer logits of the positions the loss
reads, and, on CPU, the process's other resident memory (the Python runtime and libraries, measured). Time
is a probe: a few real forward/backward passes on batches of the first epoch, timed per padded token and
scaled to that epoch's padded tokens.

Several processes (``accelerate launch``) divide each batch, so activations, logits and time per epoch per
process shrink with the data-parallel degree; ZeRO stage 1 shards the optimizer states across them, stage 2
also the gradients, stage 3 (and FSDP full sharding) also the weights. bf16/fp16 autocast keeps the activations
in 2 bytes; gradient checkpointing keeps one hidden vector per layer and token, plus one layer's full set during
its recomputation. The time does not include the gradient all-reduce between processes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from taskfit.tuning.train import (
    IGNORE,
    answer_loss,
    batch_order,
    collate,
    rss_bytes,
    total_steps,
    uses_answer_loss,
)

MB = 2**20


@dataclass
class Plan:
    device: str
    method: str
    trainable_params: int
    total_params: int
    weights_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    logits_mb: float
    runtime_mb: float  # CPU: resident memory besides the weights (interpreter, libraries, data)
    peak_mem_mb: float  # per process
    largest_batch: tuple[int, int]  # rows x padded length
    steps_per_epoch: int
    padded_tokens_per_epoch: int
    real_tokens_per_epoch: int
    probe_s_per_token: float
    time_per_epoch_s: float
    total_time_s: float
    notes: list[str] = field(default_factory=list)
    processes: int = 1  # data-parallel degree
    zero_stage: int = 0  # 0: every process holds everything; 1/2/3: what is sharded (see the module notes)
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arch(model: torch.nn.Module) -> dict[str, int]:
    cfg = getattr(model, "config", None)
    while cfg is None and hasattr(model, "base_model") and model.base_model is not model:
        model = model.base_model
        cfg = getattr(model, "config", None)
    get = lambda *names, default=0: next((getattr(cfg, n) for n in names if getattr(cfg, n, None)), default)  # noqa: E731
    h = get("hidden_size", "d_model", "n_embd")
    return {"hidden": h, "inter": get("intermediate_size", "n_inner", default=4 * h),
            "heads": get("num_attention_heads", "n_head"), "kv_heads": get("num_key_value_heads", default=0)
            or get("num_attention_heads", "n_head"), "layers": get("num_hidden_layers", "n_layer"),
            "vocab": get("vocab_size")}


def activation_bytes_per_token(arch: dict[str, int], seq: int, word: int, device: str) -> float:
    """Bytes one layer keeps per token for the backward pass: the inputs of the matmuls and norms of the
    attention and MLP blocks (about 7 hidden-size and 4 intermediate-size vectors, plus keys and values).
    On CPU the attention with a padding mask runs unfused and also keeps its probabilities (heads x sequence
    per token), and the allocator's unreturned blocks add about a quarter (both measured: see the tuning
    docs); CUDA's fused attention keeps neither."""
    h, i, a = arch["hidden"], arch["inter"], arch["heads"]
    kv = h * arch["kv_heads"] // max(a, 1)
    if device == "cuda":
        return (7 * h + 2 * kv + 4 * i) * word
    return (7 * h + 2 * kv + 4 * i + 2 * a * seq) * word * CPU_ALLOCATOR_OVERHEAD


CPU_ALLOCATOR_OVERHEAD = 1.25
# memory a CPU training process holds beyond the parts above (OpenMP thread buffers, autograd bookkeeping,
# allocator slack): what five measured CPU runs (MiniLM and SmolLM2, LoRA and full) left unexplained
CPU_PROCESS_OVERHEAD_MB = 150
INT8_ACTIVATION_OVERHEAD = 1.45  # LLM.int8 keeps an fp16 copy and an int8 copy of each quantised input


def grad_layers(model: torch.nn.Module, n_layers: int) -> int:
    """How many layers the gradient runs back through: from the lowest one holding a trainable weight."""
    from taskfit.tuning.methods import layer_list

    try:
        prefix, layers = layer_list(model)
    except ValueError:
        return n_layers
    for k, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return len(layers) - k
    # nothing trainable inside the stack: a head or a soft prompt; prompts need gradients through all layers
    emb_trainable = any(p.requires_grad for n, p in model.named_parameters() if "prompt" in n or "prefix" in n)
    return len(layers) if emb_trainable else 0


def predict(job, data, model: torch.nn.Module, *, runtime_bytes: int | None = None, probe_batches: int = 3,
            processes: int | None = None, zero_stage: int | None = None) -> Plan:
    """The plan for ``job`` (a ``taskfit.tuning.job.Job``) on its training rows ``data`` with ``model`` loaded
    and its method applied (nothing trained yet).

    ``runtime_bytes``: the process's resident memory before the model was loaded (CPU). ``processes`` and
    ``zero_stage``: the data-parallel degree and sharding planned for (default: what ``accelerate launch``
    started this process with)."""
    from taskfit.tuning import distributed

    cfg, rows = job.config, data.rows
    n_proc = processes or distributed.processes()
    zero = distributed.launch_zero_stage() if zero_stage is None else zero_stage
    lengths = [len(r) for r in rows]
    order = batch_order(lengths, cfg.batch_size, 0, cfg.seed, cfg.group_by_length)
    widths = [max(lengths[i] for i in b) for b in order]
    padded = sum(w * len(b) for w, b in zip(widths, order, strict=True))
    real = sum(lengths)
    big = max(range(len(order)), key=lambda k: widths[k] * len(order[k]))
    big_rows, big_w = -(-len(order[big]) // n_proc), widths[big]  # this process's share of the largest batch

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() * (2 if getattr(p, "quant_state", None) is not None else 1) for p in params)
    weights = sum(p.numel() * p.element_size() for p in params) + sum(b.numel() * b.element_size()
                                                                       for b in model.buffers())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    optim = 2 * sum(p.numel() * 4 for p in trainable)  # AdamW: exp_avg and exp_avg_sq in fp32
    # ZeRO: stage 1 shards the optimizer states, 2 also the gradients, 3 also the weights
    optim /= n_proc if zero >= 1 else 1
    grads /= n_proc if zero >= 2 else 1
    weights /= n_proc if zero >= 3 else 1
    arch = _arch(model)
    compute_dtype = next((p.dtype for p in trainable if p.is_floating_point()), torch.float32)
    autocast = cfg.mixed_precision in ("bf16", "fp16")
    word = 2 if autocast or compute_dtype in (torch.bfloat16, torch.float16) else 4
    n_grad_layers = grad_layers(model, arch["layers"])
    per_token = activation_bytes_per_token(arch, big_w, word, job.device.type)
    checkpointing = job.spec.gradient_checkpointing
    if checkpointing and n_grad_layers:  # each layer's input, and one layer's full set while it is recomputed
        acts = (arch["hidden"] * word * n_grad_layers + per_token) * big_rows * big_w
    else:
        acts = per_token * n_grad_layers * big_rows * big_w
    if getattr(model, "is_loaded_in_8bit", False) or getattr(getattr(model, "base_model", None), "is_loaded_in_8bit",
                                                              False):
        acts *= INT8_ACTIVATION_OVERHEAD
    # the output layer: logits, their log-softmax and its gradient, for the positions the loss reads
    causal = isinstance(rows[0].labels, list)
    if causal:
        left = uses_answer_loss(model, rows)
        positions = big_rows * (max(_answer_span(rows[i]) for i in order[big]) + 1 if left else big_w)
        logits = 2 * positions * arch["vocab"] * 4  # the fp32 logits and their gradient
    else:
        logits = 0
    notes = []
    device = job.device
    runtime = 0.0
    if device.type == "cpu":
        runtime = float(runtime_bytes if runtime_bytes is not None else max(0, rss_bytes() - weights))
        runtime += CPU_PROCESS_OVERHEAD_MB * MB
        notes.append("CPU: peak resident memory of the whole process")
    else:
        notes.append("CUDA: peak allocated by PyTorch (the CUDA context adds a few hundred MB)")
    peak = weights + grads + optim + acts + logits + runtime
    if n_proc > 1:
        notes.append(f"{n_proc} processes, ZeRO stage {zero}: memory per process; time without the all-reduce")
    s_per_token = _probe(model, rows, order, job, data.tokenizer.pad_token_id, probe_batches)
    # each process runs its share of every batch; the optimizer step runs on every process (on its shard)
    epoch_s = s_per_token * padded / n_proc + _optimizer_step_s(trainable, device) * len(order) / cfg.grad_accum \
        / (n_proc if zero >= 1 else 1)
    steps_per_epoch = -(-len(order) // cfg.grad_accum)
    total_s = epoch_s * total_steps(len(rows), cfg) / steps_per_epoch
    return Plan(device=device.type, method=job.method_name, trainable_params=n_train, total_params=n_total,
                weights_mb=weights / MB, gradients_mb=grads / MB, optimizer_mb=optim / MB, activations_mb=acts / MB,
                logits_mb=logits / MB, runtime_mb=runtime / MB, peak_mem_mb=peak / MB,
                largest_batch=(big_rows, big_w), steps_per_epoch=steps_per_epoch, padded_tokens_per_epoch=padded,
                real_tokens_per_epoch=real, probe_s_per_token=s_per_token, time_per_epoch_s=epoch_s,
                total_time_s=total_s, notes=notes, processes=n_proc, zero_stage=zero,
                mixed_precision=cfg.mixed_precision, gradient_checkpointing=checkpointing)


def _answer_span(row) -> int:
    labels = row.labels
    first = next((k for k, v in enumerate(labels) if v != IGNORE), len(labels))
    return len(labels) - first


def _probe(model, rows, order, job, pad: int, n: int) -> float:
    """Seconds per padded token of forward + backward, from ``n`` batches of the epoch after one warm-up.
    Gradients are discarded; no weight changes."""
    left = uses_answer_loss(model, rows)
    picks = order[: n + 1]
    model.train()
    tokens, seconds = 0, 0.0
    rng = torch.get_rng_state()
    for k, b in enumerate(picks):
        batch = collate([rows[i] for i in b], pad, job.device, left=left)
        if job.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with _autocast(job):
            loss = answer_loss(model, batch) if left else model(**batch).loss
        loss.backward()
        if job.device.type == "cuda":
            torch.cuda.synchronize()
        if k > 0:
            seconds += time.perf_counter() - t0
            tokens += batch["input_ids"].numel()
        model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    model.eval()
    return seconds / max(tokens, 1)


def _autocast(job):
    """The probe runs under the autocast training will use."""
    import contextlib

    precision = job.config.mixed_precision
    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    return torch.autocast(job.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _optimizer_step_s(trainable: list[torch.nn.Parameter], device: torch.device) -> float:
    """Time of one gradient clip + AdamW step (as ``train`` makes it) over tensors shaped like the trainable
    ones, measured on zero-filled stand-ins: the first tensors up to 50M elements, scaled to all of them by
    elements and by tensor count (per-tensor launch overhead), whichever is larger."""
    from taskfit.tuning.train import TrainConfig, make_optimizer

    if not trainable:
        return 0.0
    sample, n = [], 0
    for p in trainable:
        if sample and n + p.numel() > 50_000_000:
            break
        sample.append(torch.zeros_like(p, device=device, requires_grad=True))
        n += p.numel()
    for t in sample:
        t.grad = torch.zeros_like(t)
    opt = make_optimizer(sample, TrainConfig(epochs=1, max_steps=1, lr=1e-4, batch_size=1), device)
    opt.step()  # warm-up: allocates the moments
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        torch.nn.utils.clip_grad_norm_(sample, 1.0)
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / 3
    total = sum(p.numel() for p in trainable)
    return seconds * max(total / n, len(trainable) / len(sample))


# -- the classic table: memory for weights, gradients and optimizer states by method and precision -------
CLASSIC = [
    # (row, bytes per base weight, trains every weight, bits), after LLaMA-Factory's hardware table
    ("full, 32-bit", 4.0, True, 32),
    ("full, 16-bit", 2.0, True, 16),
    ("LoRA, 16-bit", 2.0, False, 16),
    ("QLoRA, 8-bit", 1.0, False, 8),
    ("QLoRA, 4-bit", 0.5, False, 4),
    ("QLoRA, 2-bit", 0.25, False, 2),
]


def classic_table(n_params: float, adapter_share: float = 0.005) -> list[dict[str, Any]]:
    """GB for weights + gradients + AdamW states, activations excluded. Full 32-bit keeps fp32 gradients and
    moments (16 bytes a weight); full 16-bit keeps them in 16 bit (8 bytes); adapter methods train
    ``adapter_share`` of the weights in fp32 (16 bytes each) on a frozen base of the given precision."""
    out = []
    for name, per_weight, full, bits in CLASSIC:
        if full:
            total = n_params * (per_weight * 4)  # weights + gradients + 2 moments, all at that precision
        else:
            quant_constants = n_params * 0.0625 / 8 * 8 if bits < 16 else 0  # ~0.5 bit per weight for scales
            total = n_params * per_weight + quant_constants + n_params * adapter_share * 16
        out.append({"method": name, "bits": bits, "gb": total / 1e9})
    return out
