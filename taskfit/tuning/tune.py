"""One fine-tuning run, top to bottom: data -> base model -> method -> plan -> train -> save -> forgetting.

The same spec on the same data returns the finished model instead of training again; an interrupted run
resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taskfit.errors import TaskfitError
from taskfit.provenance import package_versions
from taskfit.taskfile import StrategySpec, Task
from taskfit.tuning import data as tdata
from taskfit.tuning import distributed, forgetting
from taskfit.tuning.methods import count_parameters, method
from taskfit.tuning.models import base_folder, load_for_objective, load_tokenizer, resolve_device
from taskfit.tuning.spec import TuneSpec
from taskfit.tuning.store import TuneRecord, TuneStore, write_json
from taskfit.tuning.train import (
    TrainConfig,
    enable_checkpointing,
    release_free_memory,
    rss_bytes,
    total_steps,
    train,
)

TASK_TYPE = {"sft": "CAUSAL_LM", "pretrain": "CAUSAL_LM", "classify": "SEQ_CLS"}
# PEFT 0.21 still reads transformers' deprecated `is_gradient_checkpointing`; the warning says nothing to a user
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class Job:
    """Everything a run needs before any weight moves: resolved method, device, data rows, identity."""

    def __init__(self, task: Task, train_examples, spec: TuneSpec):
        self.task, self.spec = task, spec
        c = task.config
        self.device = distributed.process_device(resolve_device(spec.device))
        self.fallback: str | None = None
        self.method = method(spec.method)
        self.options = self.method.options(spec)
        if substitute := self.method.substitute(self.options, str(self.device)):
            name, self.fallback = substitute
            self.method = method(name)  # the substitute takes the same options (qlora's are lora's and more)
        self.method_name = method_name = self.method.name
        if spec.objective not in self.method.lr:
            raise TaskfitError(f"method {spec.method} does not apply to objective {spec.objective}",
                               field="tuning[].objective")
        self.lr = spec.lr or self.method.lr[spec.objective]
        self.folder = base_folder(spec.model, task.root)
        self.tokenizer = load_tokenizer(self.folder)
        self.chat_template = bool(self.tokenizer.chat_template) and not (
            c.models and c.models[0].backend == "hf" and not c.models[0].options.get("chat_template", True))
        self.labels = c.labels
        self.sample = ""
        if spec.objective == "sft":
            from taskfit.strategies import StrategyContext, strategies

            row = self.strategy_for(task, spec)
            ctx = StrategyContext(task=task, parts=_parts(task), train=train_examples, mode="score", seed=c.data.seed)
            strategy = strategies.get(row.name)(row, ctx)
            if not hasattr(strategy, "prompt"):
                raise TaskfitError(f"strategy {spec.strategy!r} has no single prompt to train on; use zero_shot, "
                                   f"structured or persona", field="tuning[].strategy")
            self.strategy_row = row
            self.rows, self.sample = tdata.sft_rows(
                train_examples, strategy.prompt, self.tokenizer, chat_template=self.chat_template,
                response_prefix=ctx.parts.response_prefix, labels=c.labels, max_length=spec.max_length)
            self.data_hash = tdata.train_hash(train_examples)
        elif spec.objective == "classify":
            if not c.labels:
                raise TaskfitError("objective classify needs the task's `labels`", field="labels")
            self.strategy_row = self.strategy_for(task, spec)
            self.rows = tdata.classify_rows(train_examples, _parts(task), self.tokenizer, c.labels, spec.max_length)
            self.sample = tdata.classify_text(_parts(task), train_examples[0])
            self.data_hash = tdata.train_hash(train_examples)
        else:
            if not spec.text_dir:
                raise TaskfitError("objective pretrain needs text_dir (a folder of .txt/.md files)",
                                   field="tuning[].text_dir")
            self.strategy_row = self.strategy_for(task, spec)
            self.rows, self.data_hash = tdata.pretrain_rows(task.root / spec.text_dir, self.tokenizer, spec.max_length)
        if not self.rows:
            raise TaskfitError("no training rows: the train split is empty", field="data.train")
        self.config = TrainConfig(epochs=spec.epochs, max_steps=spec.max_steps, lr=self.lr,
                                  batch_size=spec.batch_size, grad_accum=spec.grad_accum,
                                  warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay, seed=spec.seed,
                                  save_steps=spec.save_steps, group_by_length=spec.group_by_length,
                                  mixed_precision=distributed.mixed_precision(spec.mixed_precision, self.device))
        self.steps = total_steps(len(self.rows), self.config)
        ident = {"spec": spec.model_dump(exclude={"name", "forgetting", "save_steps", "device"}),
                 "options": self.options.model_dump(), "method": method_name, "base": _fingerprint(self.folder), "data": self.data_hash,
                 "sample": self.sample, "labels": c.labels, "device": self.device.type}
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    @staticmethod
    def strategy_for(task: Task, spec: TuneSpec) -> StrategySpec:
        """The strategy a tuned model is evaluated with: the prompt it was trained on, or the classifier."""
        if spec.objective == "classify":
            return StrategySpec(name="classifier")
        rows = task.config.strategies
        if spec.objective == "pretrain":
            return next(iter(rows), StrategySpec(name="zero_shot"))
        return next((s for s in rows if s.label() == spec.strategy or s.name == spec.strategy),
                    StrategySpec(name=spec.strategy))

    def load_model(self) -> torch.nn.Module:
        extra = self.method.load_kwargs(self.options, str(self.device))
        return load_for_objective(self.folder, self.spec.objective, self.labels, self.device, self.spec.seed, extra)

    def apply_method(self, model: torch.nn.Module) -> torch.nn.Module:
        try:
            model = self.method.apply(model, self.options, TASK_TYPE[self.spec.objective])
        except ValueError as e:
            raise TaskfitError(f"method {self.method_name}: {e}", field="tuning[].method") from e
        if self.spec.gradient_checkpointing:
            enable_checkpointing(model)
        return model


def _parts(task: Task):
    from taskfit.prompts import prompt_parts

    return prompt_parts(task)


def _fingerprint(folder: Path) -> str:
    from taskfit.backends.hf import _weights_fingerprint

    return _weights_fingerprint(folder)


def tune(task: Task, train_examples, spec: TuneSpec, *, store: TuneStore,
         on_step: Callable[[dict[str, float]], None] | None = None, stop_after: int | None = None,
         log: Callable[[str], None] = lambda s: None, runs=None) -> TuneRecord:
    """Train (or resume, or find already trained) the model ``spec`` describes, recorded in ``store``; returns
    its record. ``runs``: the run store whose review choices objective dpo may train on."""
    from taskfit.tuning import plan as tplan

    if spec.objective == "dpo":
        from taskfit.tuning.dpo import tune_dpo

        return tune_dpo(task, train_examples, spec, store=store, runs=runs, on_step=on_step, log=log)

    job = Job(task, list(train_examples)[: spec.train_limit], spec)
    rec = store.by_key(job.key)
    if rec and rec.status == "done":
        log(f"already trained: tuned:{rec.id}")
        return rec
    # under `accelerate launch` every process runs this function; only the main one writes the store, the
    # checkpoints and the artifacts, the others train their share of each batch
    main = distributed.is_main_process()
    if rec is None and main:
        rec = store.create(key=job.key, task_name=task.config.name, task_path=str(task.path), method=spec.method,
                           objective=spec.objective, base_model=spec.model, data_hash=job.data_hash, seed=spec.seed,
                           spec=spec.model_dump(), versions=package_versions(task.root))
    elif main:
        log(f"resuming tuned:{rec.id} from its last checkpoint")
    distributed.wait_for_everyone()
    if not main:
        return _train_share(job, store.by_key(job.key), store, stop_after)
    result: dict[str, Any] = dict(rec.result)
    release_free_memory(job.device)  # what earlier work in this process freed (another tune, say)
    runtime = rss_bytes()  # the process before the model: interpreter, libraries, data
    model = job.load_model()
    if spec.forgetting and "forgetting_before" not in result:
        log("forgetting check: measuring the base model")
        result["forgetting_before"] = _base_measures(job, model)
        store.update(rec.id, result)
    model = job.apply_method(model)
    trainable, total = count_parameters(model)
    shown = show_examples(task)
    if "before_after" not in result and shown:
        result["before_after"] = [{"id": ex.id, "input": _short(ex), "target": ex.target, "before": out}
                                  for ex, out in zip(shown, predict_examples(job, model, shown), strict=True)]
        store.update(rec.id, result)
    if "plan" not in result:
        result["plan"] = tplan.predict(job, model, runtime_bytes=runtime).as_dict()
        store.update(rec.id, result)
    log(f"training {trainable:,} of {total:,} parameters for {job.steps} steps on {job.device.type}"
        + (f" x {n} processes" if (n := distributed.processes()) > 1 else ""))
    res = train(model, job.rows, job.config, pad_id=job.tokenizer.pad_token_id, device=job.device,
                checkpoint_dir=rec.folder / "checkpoints", on_step=on_step, stop_after=stop_after)
    result.update(steps_done=res.steps, steps_total=job.steps)
    if res.steps < job.steps:  # stopped on request: the checkpoint is the resume point
        store.update(rec.id, result)
        distributed.wait_for_everyone()
        return store.get(rec.id)
    weights = _save(rec.folder, model, job, res.state_dict)
    steps_per_epoch = len(job.rows) / job.config.batch_size / job.config.grad_accum
    measured_epoch_s = res.train_time_s / max(res.steps / steps_per_epoch, 1e-9)
    result.update({
        "method": spec.method, "method_used": job.method_name, "fallback": job.fallback,
        "objective": spec.objective, "base_model": spec.model, "device": job.device.type,
        "train_time_s": res.train_time_s, "train_cpu_s": res.cpu_time_s, "peak_mem_mb": res.peak_mem_mb, "mem_growth_mb": res.mem_growth_mb,
        "tokens": res.tokens,
        "padded_tokens": res.padded_tokens, "tokens_per_s": res.tokens_per_s, "epochs": res.epochs,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": weights["trainable_mb"], "artifact_mb": weights["artifact_mb"], "curve": res.curve,
        "measured": {"peak_mem_mb": res.peak_mem_mb, "time_per_epoch_s": measured_epoch_s},
        "lr": job.lr, "rows": len(job.rows), "resumed_from": res.resumed_from, "processes": res.processes,
        "process_tokens": res.process_tokens,
        "mixed_precision": job.config.mixed_precision, "gradient_checkpointing": spec.gradient_checkpointing,
    })
    for row, out in zip(result.get("before_after", []), predict_examples(job, model, shown), strict=False):
        row["after"] = out
    if spec.forgetting:
        log("forgetting check: measuring the tuned model")
        after = forgetting.measure(model, job.tokenizer, job.device, spec.objective, job.chat_template)
        result["forgetting"] = forgetting.summary(result["forgetting_before"], after, spec.objective)
    store.finish(rec.id, result)
    shutil.rmtree(rec.folder / "checkpoints", ignore_errors=True)  # optimizer states: up to 3x the weights
    distributed.wait_for_everyone()
    return store.get(rec.id)


def _train_share(job: Job, rec: TuneRecord, store: TuneStore, stop_after: int | None) -> TuneRecord:
    """A process other than the main one: train this process's share of each batch, write nothing, and wait
    for the main process to finish the record."""
    model = job.apply_method(job.load_model())
    train(model, job.rows, job.config, pad_id=job.tokenizer.pad_token_id, device=job.device,
          checkpoint_dir=rec.folder / "checkpoints", stop_after=stop_after)
    distributed.wait_for_everyone()
    return store.get(rec.id)


SHOW_N = 6  # examples in the before/after table


def show_examples(task: Task):
    """The first few rows of the task's evaluation split, for the before/after table."""
    from taskfit.dataset import load_dataset

    return load_dataset(task).split(task.config.split)[:SHOW_N]


def _short(ex) -> str:
    text = " | ".join(str(v) for v in ex.fields.values() if v != ex.target)
    return text if len(text) <= 90 else text[:87] + "..."


def predict_examples(job: Job, model: torch.nn.Module, examples) -> list[str]:
    """What the model answers for ``examples`` right now: the top label of its head (classify), or its
    greedy reply to the training prompt (sft, pretrain)."""
    from taskfit.backends import GenerateRequest, ScoreRequest
    from taskfit.backends.tuned import ClassifierBackend, live_backend
    from taskfit.prompts import render_input
    from taskfit.strategies import StrategyContext, strategies

    if not examples:
        return []
    was_training = model.training
    model.eval()
    try:
        if job.spec.objective == "classify":
            backend = ClassifierBackend(model, job.tokenizer, job.labels, "before-after", job.device, 8)
            labels = tuple(job.labels)
            res = backend.score([ScoreRequest(({"role": "user", "content": render_input(_parts(job.task), ex)},),
                                              labels) for ex in examples])
            return [labels[max(range(len(labels)), key=r.logprobs.__getitem__)] for r in res]
        backend = live_backend(model, job.tokenizer, job.device, job.chat_template, "before-after")
        row = job.strategy_row
        ctx = StrategyContext(task=job.task, parts=_parts(job.task), train=[], mode="generate", seed=0)
        strategy = strategies.get(row.name)(row, ctx)
        prompt = getattr(strategy, "prompt", None)
        if prompt is None:
            return ["" for _ in examples]
        res = backend.generate([GenerateRequest(prompt(ex), max_tokens=12, stop=("\n",)) for ex in examples])
        return [(r.texts[0] if r.texts else "").strip() for r in res]
    finally:
        model.train(was_training)


def _base_measures(job: Job, model: torch.nn.Module) -> dict[str, Any]:
    """The base model's general figures, computed once per base model and kept beside the model cache."""
    from taskfit.bundled import cache_root

    name = f"{_fingerprint(job.folder)}-{job.spec.objective}-{int(job.chat_template)}-{job.device.type}.json"
    path = cache_root() / "forgetting" / name
    if path.exists():
        return json.loads(path.read_text())
    measures = forgetting.measure(model, job.tokenizer, job.device, job.spec.objective, job.chat_template)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measures))
    return measures


def _save(folder: Path, model: torch.nn.Module, job: Job, state_dict: dict | None = None) -> dict[str, Any]:
    """Adapter (PEFT methods) or full weights, tokenizer, template, metadata; returns sizes. ``state_dict``:
    the weights gathered from the processes they were sharded across (FSDP, ZeRO-3)."""
    is_peft = hasattr(model, "peft_config")
    out = folder / ("adapter" if is_peft else "model")
    model.save_pretrained(out, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    job.tokenizer.save_pretrained(folder / "tokenizer")
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    h = hashlib.sha256()
    for f in sorted(out.glob("*.safetensors")):
        h.update(f.read_bytes())
    c = job.task.config
    write_json(folder / "template.json", {
        "strategy": job.strategy_row.model_dump(), "prompt": c.prompt.model_dump(),
        "chat_template": job.tokenizer.chat_template if job.chat_template else None, "rendered_row": job.sample})
    write_json(folder / "tune.json", {
        "objective": job.spec.objective, "base_model": job.spec.model, "task_root": str(job.task.root),
        "labels": c.labels, "mergeable": job.method.mergeable and is_peft,
        "chat_template": job.chat_template, "weights_sha": h.hexdigest()[:12], "spec": job.spec.model_dump(),
        "method_used": job.method_name, "data_hash": job.data_hash, "seed": job.spec.seed,
        "strategy": job.strategy_row.model_dump(), "versions": package_versions(job.task.root)})
    return {"trainable_mb": trainable_bytes / 2**20,
            "artifact_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20}
