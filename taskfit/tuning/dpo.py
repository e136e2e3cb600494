"""Preference tuning (DPO): TRL's ``DPOTrainer`` on a PEFT adapter, whose disabled state is the reference
model, so no second copy of the base is loaded.

Pairs come from a JSONL file (``prompt, chosen, rejected``, as the review app exports them), from the review
app's choices stored in the workspace, or are self-generated: k sampled answers per train input, ranked by
the task's metric against the gold answer, best kept as chosen and worst as rejected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskfit.errors import TaskfitError


@dataclass
class Pair:
    prompt: str  # the exact text the model sees (chat template applied), reply opening included
    chosen: str
    rejected: str


@dataclass
class DPOResult:
    steps: int
    train_time_s: float
    peak_mem_mb: float
    curve: list[dict[str, float]]


def as_pairs(records: list[dict[str, Any]], tokenizer, chat_template: bool) -> list[Pair]:
    """Plain-text records (``prompt`` is the user's turn) rendered through the model's chat template."""
    from taskfit.backends.hf import prompt_text

    return [Pair(prompt_text(tokenizer, [{"role": "user", "content": r["prompt"]}], chat_template),
                 r["chosen"], r["rejected"]) for r in records]


def self_generated(examples, prompt_fn, backend, metric, parse: Callable[[str], str | None], *,
                   k: int, seed: int, prompt_text: Callable[[Any], str], lead: str = "",
                   max_tokens: int = 16) -> list[Pair]:
    """For each example, ``k`` sampled replies ranked by ``metric`` against gold: best vs worst, when they
    differ in score and in text."""
    from taskfit.backends import GenerateRequest

    reqs = [GenerateRequest(prompt_fn(ex), max_tokens=max_tokens, stop=("\n",), temperature=1.0, n=k,
                            seed=seed + i) for i, ex in enumerate(examples)]
    out = []
    for ex, req, res in zip(examples, reqs, backend.generate(reqs), strict=True):
        scored = sorted(((metric(parse(t), ex), t.strip()) for t in res.texts if t.strip()), key=lambda s: s[0])
        if len(scored) < 2:
            continue
        (worst, rejected), (best, chosen) = scored[0], scored[-1]
        if best > worst and chosen != rejected:
            out.append(Pair(prompt_text(req.messages), lead + chosen, lead + rejected))
    return out


def train_dpo(model, tokenizer, pairs: list[Pair], *, output_dir: Path, lr: float, beta: float,
              loss_type: str, batch_size: int, epochs: float, max_steps: int | None, max_length: int, seed: int,
              on_step: Callable[[dict[str, float]], None] | None = None) -> DPOResult:
    """Train the adapter of ``model`` (a PEFT model) on ``pairs``; the adapter switched off is the reference."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from taskfit.tuning.train import rss_bytes

    if not pairs:
        raise TaskfitError("no preference pairs to train on")
    if not hasattr(model, "peft_config"):
        raise TaskfitError("objective dpo trains a PEFT adapter (lora, dora, ia3): the adapter switched off is "
                           "the reference model", field="tuning[].method")
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    curve: list[dict[str, float]] = []
    peak = [rss_bytes()]
    start = time.perf_counter()

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                point = {"step": float(state.global_step), "epoch": float(state.epoch or 0), "loss": logs["loss"],
                         "margin": logs.get("rewards/margins", 0.0), "time_s": time.perf_counter() - start}
                curve.append(point)
                if on_step:
                    on_step(point)

        def on_step_end(self, args, state, control, **kw):
            peak[0] = max(peak[0], rss_bytes())

    config = DPOConfig(
        output_dir=str(output_dir), learning_rate=lr, beta=beta, loss_type=[loss_type],
        per_device_train_batch_size=batch_size, num_train_epochs=epochs, max_steps=max_steps or -1,
        max_length=max_length, seed=seed, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer,
                         callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # progress goes through on_step
    out = trainer.train()
    return DPOResult(steps=out.global_step, train_time_s=time.perf_counter() - start,
                     peak_mem_mb=peak[0] / 2**20, curve=curve)


@torch.no_grad()
def loglik_margin(model, tokenizer, pairs: list[Pair]) -> float:
    """Mean over ``pairs`` of log p(chosen | prompt) - log p(rejected | prompt), summed over reply tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for p in pairs:
        prompt_ids = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        lls = []
        for reply in (p.chosen, p.rejected):
            reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + reply_ids], device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, len(prompt_ids):]
            lls.append(logp[len(prompt_ids) - 1:].gather(-1, targets[:, None]).sum().item())
        total += lls[0] - lls[1]
    model.train(was_training)
    return total / len(pairs)


# -- one run, recorded like every tuned model ---------------------------------------------------------

DPO_LR = 1e-4  # adapters; full-weight DPO usually runs near 5e-6


def tune_dpo(task, train_examples, spec, *, store, runs=None, on_step=None,
             log: Callable[[str], None] = lambda s: None):
    """Preference-tune the adapter ``spec`` describes on pairs from its source; stored as ``tuned:<id>``
    (loaded and evaluated as an sft adapter on the same prompt)."""
    import hashlib
    import json
    import shutil

    from taskfit.runner import package_versions
    from taskfit.tuning import forgetting
    from taskfit.tuning.methods import count_parameters
    from taskfit.tuning.tune import Job, _base_measures, _save, _short, predict_examples, show_examples

    examples = list(train_examples)[: spec.train_limit]
    job = Job(task, examples, spec.model_copy(update={"objective": "sft"}))
    model = job.load_model()
    pairs, source = _pairs(task, job, model, spec, runs, examples, log)
    digest = hashlib.sha256(json.dumps([p.__dict__ for p in pairs]).encode()).hexdigest()
    key = hashlib.sha256(f"dpo:{job.key}:{digest}:{spec.dpo_beta}:{spec.dpo_loss}".encode()).hexdigest()[:24]
    rec = store.by_key(key)
    if rec and rec.status == "done":
        log(f"already trained: tuned:{rec.id}")
        return rec
    if rec is None:
        rec = store.create(key=key, task_name=task.config.name, task_path=str(task.path), method=spec.method,
                           objective="dpo", base_model=spec.model, data_hash=digest[:16], seed=spec.seed,
                           spec=spec.model_dump(), versions=package_versions(task.root))
    else:
        log(f"tuned:{rec.id} did not finish: training again")
    result: dict[str, Any] = {"pairs": len(pairs), "pairs_source": source}
    if spec.forgetting:
        log("forgetting check: measuring the base model")
        result["forgetting_before"] = _base_measures(job, model)
    model = job.apply_method(model)
    trainable, total = count_parameters(model)
    shown = show_examples(task)
    result["before_after"] = [{"id": ex.id, "input": _short(ex), "target": ex.target, "before": out}
                              for ex, out in zip(shown, predict_examples(job, model, shown), strict=True)]
    result["margin_before"] = loglik_margin(model, job.tokenizer, pairs)
    log(f"dpo: {len(pairs)} pairs ({source}), training {trainable:,} of {total:,} parameters on {job.device.type}")
    res = train_dpo(model, job.tokenizer, pairs, output_dir=rec.folder / "trainer", lr=spec.lr or DPO_LR,
                    beta=spec.dpo_beta, loss_type=spec.dpo_loss, batch_size=spec.batch_size, epochs=spec.epochs,
                    max_steps=spec.max_steps, max_length=spec.max_length, seed=spec.seed, on_step=on_step)
    shutil.rmtree(rec.folder / "trainer", ignore_errors=True)
    result["margin_after"] = loglik_margin(model, job.tokenizer, pairs)
    weights = _save(rec.folder, model, job)
    meta_path = rec.folder / "tune.json"
    meta = json.loads(meta_path.read_text())
    meta.update(spec=spec.model_dump(), trained_with="dpo")  # loads and evaluates as an sft adapter
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    result.update({
        "method": spec.method, "method_used": job.method_name, "objective": "dpo", "base_model": spec.model,
        "device": job.device.type, "train_time_s": res.train_time_s, "peak_mem_mb": res.peak_mem_mb,
        "steps_done": res.steps, "trainable_params": trainable, "total_params": total,
        "trainable_pct": 100 * trainable / total, "adapter_mb": weights["trainable_mb"],
        "artifact_mb": weights["artifact_mb"], "curve": res.curve, "lr": spec.lr or DPO_LR,
        "rows": len(pairs), "measured": {"peak_mem_mb": res.peak_mem_mb}})
    for row, out in zip(result["before_after"], predict_examples(job, model, shown), strict=False):
        row["after"] = out
    if spec.forgetting:
        log("forgetting check: measuring the tuned model")
        after = forgetting.measure(model, job.tokenizer, job.device, "sft", job.chat_template)
        result["forgetting"] = forgetting.summary(result["forgetting_before"], after, "sft")
    store.finish(rec.id, result)
    return store.get(rec.id)


def _pairs(task, job, model, spec, runs, examples, log) -> tuple[list[Pair], str]:
    """The run's pairs and where they came from."""
    from taskfit.backends.hf import prompt_text
    from taskfit.backends.tuned import live_backend
    from taskfit.metrics import build_metric
    from taskfit.parsing import parse_output
    from taskfit.strategies import StrategyContext, strategies
    from taskfit.tuning.preferences import load_pairs

    if spec.preferences == "review":
        from taskfit.review import preference_pairs

        if runs is None:
            raise TaskfitError("preferences: review reads the workspace's review choices; none was given")
        records = preference_pairs(runs, task.config.name)
        if not records:
            raise TaskfitError(f"no preference pairs for task {task.config.name!r} in the review app yet "
                               f"(pairwise choices, or correct and incorrect labels)", field="tuning[].preferences")
        return as_pairs(records, job.tokenizer, job.chat_template), "review"
    if spec.preferences:
        path = task.root / spec.preferences
        return as_pairs(load_pairs(path), job.tokenizer, job.chat_template), str(path)
    c = task.config
    ctx = StrategyContext(task=task, parts=_parts(task), train=[], mode="generate", seed=c.data.seed)
    strategy = strategies.get(job.strategy_row.name)(job.strategy_row, ctx)
    metric = build_metric(c.metrics[0].name, c.metrics[0].options)
    backend = live_backend(model, job.tokenizer, job.device, job.chat_template, "dpo-sampling")
    log(f"dpo: sampling {spec.dpo_samples} answers for each of {len(examples)} train inputs")
    model.eval()
    pairs = self_generated(examples, strategy.prompt, backend, metric,
                           lambda t: parse_output(t, c.parse, c.labels, c.label_aliases).value,
                           k=spec.dpo_samples, seed=spec.seed,
                           prompt_text=lambda m: prompt_text(job.tokenizer, m, job.chat_template),
                           lead=" " if ctx.parts.response_prefix[-1:] not in ("", " ", "\n") else "")
    if not pairs:
        raise TaskfitError(f"no self-generated pairs: the {spec.dpo_samples} samples of every train input scored "
                           f"alike; raise dpo_samples or give preferences", field="tuning[].preferences")
    return pairs, f"self-generated (k={spec.dpo_samples})"


def _parts(task):
    from taskfit.prompts import prompt_parts

    return prompt_parts(task)
