"""One fine-tuning run, top to bottom: resolve -> rows -> base model -> method -> plan -> train -> save ->
before/after -> forgetting, each step a call into its component (job, data, models, methods, plan, train,
store, before_after, forgetting). ``tune`` is the recipe for sft, classify and pretrain; ``tune_dpo`` the
recipe for preference pairs.

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
from pydantic import BaseModel

from taskfit import calibration
from taskfit.backends.hf import _weights_fingerprint
from taskfit.errors import TaskfitError
from taskfit.prompts import render_input
from taskfit.provenance import package_versions
from taskfit.taskfile import Task
from taskfit.tuning import before_after, distributed, dpo, forgetting, objectives
from taskfit.tuning import data as tdata
from taskfit.tuning import plan as tplan
from taskfit.tuning.job import Job, resolve
from taskfit.tuning.methods import count_parameters
from taskfit.tuning.models import load_for_objective, load_tokenizer
from taskfit.tuning.spec import TuneSpec
from taskfit.tuning.store import TuneRecord, TuneStore, save_weights, write_json
from taskfit.tuning.train import (
    enable_checkpointing,
    release_free_memory,
    rss_bytes,
    step_cost,
    total_steps,
    train,
)

TASK_TYPE = {"sft": "CAUSAL_LM", "pretrain": "CAUSAL_LM", "classify": "SEQ_CLS"}
# PEFT 0.21 still reads transformers' deprecated `is_gradient_checkpointing`, and TRL 1.16's DPO trainer calls
# its deprecated `gradient_checkpointing_disable`/`_enable` around every reference pass
# (trl/models/utils.py, disable_gradient_checkpointing): the warnings say nothing a user can act on
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
warnings.filterwarnings("ignore", message="`gradient_checkpointing_(disable|enable)` is deprecated", category=FutureWarning)
# dpo's keys were TuneSpec fields before the dpo objective owned them; every identity still carries them (their
# defaults, for the other objectives) so that models trained before keep their key and are not trained again
IDENTITY_DEFAULTS = dpo.Options().model_dump()


def tune(task: Task, train_examples, spec: TuneSpec, *, store: TuneStore,
         on_step: Callable[[dict[str, float]], None] | None = None, stop_after: int | None = None,
         log: Callable[[str], None] = lambda s: None, runs=None) -> TuneRecord:
    """Train (or resume, or find already trained) the model ``spec`` describes, recorded in ``store``; returns
    its record. ``runs``: the run store whose review choices objective dpo may train on."""
    if spec.objective == "dpo":
        return tune_dpo(task, train_examples, spec, store=store, runs=runs, on_step=on_step, stop_after=stop_after,
                        log=log)
    job = resolve(task, train_examples, spec)  # a key of another objective on this row is an error here
    data = prepare_rows(job)
    key = identity(job, data)
    rec = store.by_key(key)
    if rec and rec.status == "done":
        log(f"already trained: tuned:{rec.id}")
        return rec
    # under `accelerate launch` every process runs this function; only the main one writes the store, the
    # checkpoints and the artifacts, the others train their share of each batch
    main = distributed.is_main_process()
    if rec is None and main:
        rec = store.create(key=key, task_name=task.config.name, task_path=str(task.path), method=spec.method,
                           objective=spec.objective, base_model=spec.model, data_hash=data.data_hash, seed=spec.seed,
                           spec=spec.model_dump(), versions=package_versions(task.root))
    elif main:
        log(f"resuming tuned:{rec.id} from its last checkpoint")
    distributed.wait_for_everyone()
    if not main:
        return _train_share(job, data, store.by_key(key), store, stop_after)
    result: dict[str, Any] = dict(rec.result)
    release_free_memory(job.device)  # what earlier work in this process freed (another tune, say)
    runtime = rss_bytes()  # the process before the model: interpreter, libraries, data

    model = build_model(job)
    if spec.forgetting and "forgetting_before" not in result:
        log("forgetting check: measuring the base model")
        result["forgetting_before"] = _forgetting_baseline(job, data, model)
        store.update(rec.id, result)
    model = apply_method(job, model)
    trainable, total = count_parameters(model)
    shown = before_after.show_examples(task)
    if "before_after" not in result and shown:
        result["before_after"] = before_after.before(shown, predict_examples(job, data, model, shown))
        store.update(rec.id, result)
    if "plan" not in result:
        result["plan"] = tplan.predict(job, data, model, runtime_bytes=runtime).as_dict()
        store.update(rec.id, result)

    steps = total_steps(len(data.rows), job.config)
    planned = result["plan"]["total_time_s"]  # said before a long training starts, not after
    log(f"training {trainable:,} of {total:,} parameters for {steps} steps on {job.device.type}"
        + (f" x {n} processes" if (n := distributed.processes()) > 1 else "")
        + (f"; planned {planned / 60:.0f} min" if planned >= 60 else f"; planned {planned:.0f} s"))
    res = train(model, data.rows, job.config, pad_id=data.tokenizer.pad_token_id, device=job.device,
                checkpoint_dir=rec.folder / "checkpoints", on_step=on_step, stop_after=stop_after)
    result.update(steps_done=res.steps, steps_total=steps)
    if res.steps < steps:  # stopped on request: the checkpoint is the resume point
        store.update(rec.id, result)
        distributed.wait_for_everyone()
        return store.get(rec.id)

    weights = save(rec.folder, model, job, data, res.state_dict)
    steps_per_epoch = len(data.rows) / job.config.batch_size / job.config.grad_accum
    measured_epoch_s = res.train_time_s / max(res.steps / steps_per_epoch, 1e-9)
    result.update({
        "method": spec.method, "method_used": job.method_name, "fallback": job.fallback,
        "objective": spec.objective, "base_model": spec.model, "device": job.device.type,
        "train_time_s": res.train_time_s, "train_cpu_s": res.cpu_time_s, "peak_mem_mb": res.peak_mem_mb,
        "mem_growth_mb": res.mem_growth_mb, "tokens": res.tokens,
        "padded_tokens": res.padded_tokens, "tokens_per_s": res.tokens_per_s, "epochs": res.epochs,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": weights["trainable_mb"], "artifact_mb": weights["artifact_mb"], "curve": res.curve,
        "measured": {"peak_mem_mb": res.peak_mem_mb, "time_per_epoch_s": measured_epoch_s},
        "lr": job.lr, "rows": len(data.rows), "resumed_from": res.resumed_from, "processes": res.processes,
        "process_tokens": res.process_tokens,
        "mixed_precision": job.config.mixed_precision, "gradient_checkpointing": spec.gradient_checkpointing,
    })
    result.update(train_work(job, data, model, res.padded_tokens))
    before_after.add_after(result.get("before_after", []), predict_examples(job, data, model, shown))
    if spec.forgetting:
        log("forgetting check: measuring the tuned model")
        after = forgetting.measure(model, data.tokenizer, job.device, spec.objective, data.chat_template)
        result["forgetting"] = forgetting.summary(result["forgetting_before"], after, spec.objective)
    store.finish(rec.id, result)
    shutil.rmtree(rec.folder / "checkpoints", ignore_errors=True)  # optimizer states: up to 3x the weights
    distributed.wait_for_everyone()
    return store.get(rec.id)


def train_work(job: Job, data: tdata.TrainData, model: torch.nn.Module, padded_tokens: int) -> dict[str, Any]:
    """Training priced by its work: the padded tokens trained on x the calibrated seconds per training token
    (taskfit.calibration), which, unlike ``train_time_s``, does not move with other load on the machine."""
    seconds, spread = step_cost(model, data.rows, job.config, pad_id=data.tokenizer.pad_token_id, device=job.device,
                                repeats=calibration.REPEATS)
    unit = {"seconds_per_token": seconds, "spread": spread, "repeats": calibration.REPEATS,
            "threads": torch.get_num_threads(), "batch": f"{min(len(data.rows), calibration.BATCH)} rows"}
    return {"train_unit_cost": unit, "train_work_s": padded_tokens * seconds}


def tune_dpo(task: Task, train_examples, spec: TuneSpec, *, store: TuneStore, runs=None,
             on_step: Callable[[dict[str, float]], None] | None = None, stop_after: int | None = None,
             log: Callable[[str], None] = lambda s: None) -> TuneRecord:
    """Preference-tune the adapter ``spec`` describes on pairs from its source; stored as ``tuned:<id>``
    (loaded and evaluated as an sft adapter on the same prompt). An interrupted run resumes from its last
    checkpoint."""
    options = objectives.options(spec)
    job = resolve(task, train_examples, objectives.without_own_keys(spec, "sft"))
    data = prepare_rows(job)
    model = build_model(job)
    pairs, source = dpo.preference_pairs(
        options, root=task.root, task_name=task.config.name, runs=runs, tokenizer=data.tokenizer,
        chat_template=data.chat_template,
        sample=lambda: _sampled_pairs(job, data, model, options, log))
    digest = hashlib.sha256(json.dumps([p.__dict__ for p in pairs]).encode()).hexdigest()
    sft_key = identity(job, data, options)
    key = hashlib.sha256(f"dpo:{sft_key}:{digest}:{options.dpo_beta}:{options.dpo_loss}".encode()).hexdigest()[:24]
    rec = store.by_key(key)
    if rec and rec.status == "done":
        log(f"already trained: tuned:{rec.id}")
        return rec
    if rec is None:
        rec = store.create(key=key, task_name=task.config.name, task_path=str(task.path), method=spec.method,
                           objective="dpo", base_model=spec.model, data_hash=digest[:16], seed=spec.seed,
                           spec=spec.model_dump(), versions=package_versions(task.root))
    else:
        log(f"resuming tuned:{rec.id} from its last checkpoint")
    result: dict[str, Any] = {**rec.result, "pairs": len(pairs), "pairs_source": source}
    if spec.forgetting and "forgetting_before" not in result:
        log("forgetting check: measuring the base model")
        result["forgetting_before"] = _forgetting_baseline(job, data, model)
    model = apply_method(job, model)
    trainable, total = count_parameters(model)
    shown = before_after.show_examples(task)
    if "margin_before" not in result:  # the untrained adapter's answers and margin, kept for a resumed run
        result["before_after"] = before_after.before(shown, predict_examples(job, data, model, shown))
        result["margin_before"] = dpo.loglik_margin(model, data.tokenizer, pairs)
        store.update(rec.id, result)

    log(f"dpo: {len(pairs)} pairs ({source}), training {trainable:,} of {total:,} parameters on {job.device.type}")
    lr = spec.lr or dpo.LR
    res = dpo.train_dpo(model, data.tokenizer, pairs, output_dir=rec.folder / "trainer", lr=lr,
                        beta=options.dpo_beta, loss_type=options.dpo_loss, batch_size=spec.batch_size,
                        epochs=spec.epochs, max_steps=spec.max_steps, max_length=spec.max_length, seed=spec.seed,
                        save_steps=spec.save_steps, stop_after=stop_after, on_step=on_step)
    if not res.finished:  # stopped on request: the checkpoint is the resume point
        store.update(rec.id, {**result, "steps_done": res.steps})
        return store.get(rec.id)
    shutil.rmtree(rec.folder / "trainer", ignore_errors=True)  # checkpoints: optimizer states and all
    result["margin_after"] = dpo.loglik_margin(model, data.tokenizer, pairs)

    weights = save(rec.folder, model, job, data)
    meta_path = rec.folder / "tune.json"
    meta = json.loads(meta_path.read_text())
    meta.update(spec=spec.model_dump(), trained_with="dpo")  # loads and evaluates as an sft adapter
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    result.update({
        "method": spec.method, "method_used": job.method_name, "objective": "dpo", "base_model": spec.model,
        "device": job.device.type, "train_time_s": res.train_time_s, "peak_mem_mb": res.peak_mem_mb,
        "steps_done": res.steps, "trainable_params": trainable, "total_params": total,
        "trainable_pct": 100 * trainable / total, "adapter_mb": weights["trainable_mb"],
        "artifact_mb": weights["artifact_mb"], "curve": res.curve, "lr": lr, "resumed_from": res.resumed_from,
        "rows": len(pairs), "measured": {"peak_mem_mb": res.peak_mem_mb}})
    before_after.add_after(result["before_after"], predict_examples(job, data, model, shown))
    if spec.forgetting:
        log("forgetting check: measuring the tuned model")
        after = forgetting.measure(model, data.tokenizer, job.device, "sft", data.chat_template)
        result["forgetting"] = forgetting.summary(result["forgetting_before"], after, "sft")
    store.finish(rec.id, result)
    return store.get(rec.id)


# -- the steps ------------------------------------------------------------------------------------------


def prepare_rows(job: Job) -> tdata.TrainData:
    """The training rows of ``job``, rendered with the base model's tokenizer (and chat template)."""
    spec, c = job.spec, job.task.config
    tokenizer = load_tokenizer(job.folder)
    chat_template = bool(tokenizer.chat_template) and not (
        c.models and c.models[0].backend == "hf" and not c.models[0].options.get("chat_template", True))
    examples = job.examples
    if spec.objective == "sft":
        rows, sample = tdata.sft_rows(examples, job.prompt, tokenizer, chat_template=chat_template,
                                      response_prefix=job.parts.response_prefix, labels=c.labels,
                                      max_length=spec.max_length)
        data_hash = tdata.train_hash(examples)
    elif spec.objective == "classify":
        rows = tdata.classify_rows(examples, job.parts, tokenizer, c.labels, spec.max_length)
        sample = tdata.classify_text(job.parts, examples[0]) if examples else ""
        data_hash = tdata.train_hash(examples)
    else:
        rows, data_hash = tdata.pretrain_rows(job.task.root / spec.text_dir, tokenizer, spec.max_length)
        sample = ""
    if not rows:
        raise TaskfitError("no training rows: the train split is empty", field="data.train")
    return tdata.TrainData(tokenizer=tokenizer, chat_template=chat_template, rows=rows, sample=sample,
                           data_hash=data_hash)


def identity(job: Job, data: tdata.TrainData, objective_options: BaseModel | None = None) -> str:
    """The run's key: everything that decides the trained weights (spec, options, method, base weights, data,
    the rendered row, labels, device type); a run with the same key is the same model."""
    spec = job.spec.model_dump(exclude={"name", "forgetting", "save_steps", "device"})
    spec.update(IDENTITY_DEFAULTS, **(objective_options.model_dump() if objective_options else {}))
    ident = {"spec": spec, "options": job.options.model_dump(), "method": job.method_name,
             "base": _weights_fingerprint(job.folder), "data": data.data_hash, "sample": data.sample,
             "labels": job.labels, "device": job.device.type}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def build_model(job: Job) -> torch.nn.Module:
    """The base model with the objective's head, loaded as the method asks (qlora: quantised)."""
    extra = job.method.load_kwargs(job.options, str(job.device))
    return load_for_objective(job.folder, job.spec.objective, job.labels, job.device, job.spec.seed, extra)


def apply_method(job: Job, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with the method's trainable parts (an adapter, unfrozen layers, a head)."""
    try:
        model = job.method.apply(model, job.options, TASK_TYPE[job.spec.objective])
    except ValueError as e:
        raise TaskfitError(f"method {job.method_name}: {e}", field="tuning[].method") from e
    if job.spec.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def predict_examples(job: Job, data: tdata.TrainData, model: torch.nn.Module, examples) -> list[str]:
    """What the model answers for ``examples`` right now: the top label of its head (classify), or its
    greedy reply to the training prompt (sft, pretrain)."""
    if not examples:
        return []
    was_training = model.training
    model.eval()
    try:
        if job.spec.objective == "classify":
            return before_after.top_labels(model, data.tokenizer, job.device, job.labels,
                                           [render_input(job.parts, ex) for ex in examples])
        if job.prompt is None:
            return ["" for _ in examples]
        return before_after.greedy_replies(model, data.tokenizer, job.device, data.chat_template, job.prompt,
                                           examples)
    finally:
        model.train(was_training)


def save(folder: Path, model: torch.nn.Module, job: Job, data: tdata.TrainData,
         state_dict: dict | None = None) -> dict[str, Any]:
    """The weights and tokenizer, the exact prompt template with one rendered row (``template.json``) and the
    run's metadata (``tune.json``); returns the weights' sizes."""
    weights = save_weights(folder, model, data.tokenizer, state_dict)
    c = job.task.config
    write_json(folder / "template.json", {
        "strategy": job.strategy_row.model_dump(), "prompt": c.prompt.model_dump(),
        "chat_template": data.tokenizer.chat_template if data.chat_template else None, "rendered_row": data.sample})
    write_json(folder / "tune.json", {
        "objective": job.spec.objective, "base_model": job.spec.model, "task_root": str(job.task.root),
        "labels": c.labels, "mergeable": job.method.mergeable and weights["adapter"],
        "chat_template": data.chat_template, "weights_sha": weights["weights_sha"], "spec": job.spec.model_dump(),
        "method_used": job.method_name, "data_hash": data.data_hash, "seed": job.spec.seed,
        "strategy": job.strategy_row.model_dump(), "versions": package_versions(job.task.root)})
    return weights


def _forgetting_baseline(job: Job, data: tdata.TrainData, model: torch.nn.Module) -> dict[str, Any]:
    return forgetting.baseline(model, data.tokenizer, job.device, job.spec.objective, data.chat_template,
                               _weights_fingerprint(job.folder))


def _sampled_pairs(job: Job, data: tdata.TrainData, model: torch.nn.Module, options: dpo.Options,
                   log: Callable[[str], None]) -> list[dpo.Pair]:
    log(f"dpo: sampling {options.dpo_samples} answers for each of {len(job.examples)} train inputs")
    return dpo.sampled_pairs(job.task, job.examples, job.prompt, model, data.tokenizer, job.device,
                             data.chat_template, job.parts.response_prefix, options, job.spec.seed)


def _train_share(job: Job, data: tdata.TrainData, rec: TuneRecord, store: TuneStore,
                 stop_after: int | None) -> TuneRecord:
    """A process other than the main one: train this process's share of each batch, write nothing, and wait
    for the main process to finish the record."""
    model = apply_method(job, build_model(job))
    train(model, data.rows, job.config, pad_id=data.tokenizer.pad_token_id, device=job.device,
          checkpoint_dir=rec.folder / "checkpoints", stop_after=stop_after)
    distributed.wait_for_everyone()
    return store.get(rec.id)
