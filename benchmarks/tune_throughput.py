"""taskfit's fine-tuning loop vs the textbook recipe, same model, data and hyperparameters.

The textbook recipe: ``transformers.Trainer`` + PEFT LoRA, rows in random order padded to the longest row of
each batch (``DataCollatorForSeq2Seq`` / ``DataCollatorWithPadding``), no packing or length grouping, the
model's own loss. taskfit: ``taskfit.tuning`` (length-grouped batches; for sft, the output layer only on the
answer positions). Each side trains in its own fresh process (so peak memory is each one's own), started
from this one; both see identical token rows, LoRA settings, learning rate, batch size and steps.

    python benchmarks/tune_throughput.py                 # both configurations
    python benchmarks/tune_throughput.py --config sft --rows 128
    python benchmarks/tune_throughput.py --config sft --rows 48 --set max_length=96   # a short CPU run
    python benchmarks/tune_throughput.py --config sft --set model='"/models/Qwen2.5-1.5B-Instruct"' --rows 2000

Precision and memory settings apply to both sides alike: ``mixed_precision`` (default auto: bf16 on a GPU that
supports it, as ``TrainingArguments(bf16=True)`` for the textbook side; fp32 on a CPU) and
``gradient_checkpointing`` (``--set gradient_checkpointing=true``).

Prints tokens/s (real, non-padding tokens) for each side and the ratio, peak memory for each side, and the
planner's predicted vs measured peak memory and time per epoch for the taskfit run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "sst2" / "task.yaml"
CONFIGS = {
    # the 135M chat model learns to answer with the label after the task's prompt
    "sft": {"method": "lora", "objective": "sft", "model": "bundled", "rank": 8, "batch_size": 8, "lr": 2e-4},
    # the classic recipe: LoRA r=8 on query/value of the MiniLM encoder with a classification head
    "classify": {"method": "lora", "objective": "classify", "model": "minilm", "rank": 8, "batch_size": 16,
                 "lr": 5e-4, "target_modules": ["query", "value"], "max_length": 128},
}


def _job(config: str, rows: int):
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import prepare_rows, resolve

    task, ds = prepare(TASK)
    overrides = json.loads(os.environ.get("TUNE_BENCH_OVERRIDES", "{}"))  # e.g. another base model
    spec = TuneSpec(**{**CONFIGS[config], **overrides}, epochs=1, train_limit=rows, forgetting=False, seed=0)
    job = resolve(task, ds.split("train"), spec)
    return task, ds, spec, job, prepare_rows(job)


def side_taskfit(config: str, rows: int) -> dict:
    from taskfit.tuning.tune import tune
    from taskfit.workspace import Workspace

    task, ds, spec, _, _ = _job(config, rows)
    rec = tune(task, ds.split("train"), spec, store=Workspace.default().tunes)  # $TASKFIT_HOME: set per side
    r = rec.result
    return {"tokens": r["tokens"], "padded_tokens": r["padded_tokens"], "train_time_s": r["train_time_s"],
            "cpu_s": r["train_cpu_s"],
            "peak_mem_mb": r["peak_mem_mb"], "growth_mb": r["mem_growth_mb"], "plan": r["plan"], "measured": r["measured"],
            "final_loss": r["curve"][-1]["loss"], "steps": r["steps_done"], "precision": r["mixed_precision"]}


def side_textbook(config: str, rows: int) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer, TrainingArguments

    from taskfit.tuning.distributed import mixed_precision
    from taskfit.tuning.train import (  # the same measurement as taskfit
        PeakMemory,
        release_free_memory,
        total_steps,
    )
    from taskfit.tuning.tune import TASK_TYPE, build_model

    _, _, spec, job, rows_ = _job(config, rows)
    precision = mixed_precision(spec.mixed_precision, job.device)  # what the taskfit side runs with
    model = job.method.apply(build_model(job), job.options, TASK_TYPE[spec.objective])  # the same adapter
    data = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows_.rows]
    if config == "sft":
        collator = DataCollatorForSeq2Seq(rows_.tokenizer, padding=True, label_pad_token_id=-100)
    else:
        collator = DataCollatorWithPadding(rows_.tokenizer)
    tokens = sum(len(r.input_ids) for r in rows_.rows)
    padded = [0]
    inner = collator

    def counting(features):
        batch = inner(features)
        padded[0] += batch["input_ids"].numel()
        return batch

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=spec.batch_size, num_train_epochs=1,
                                 learning_rate=spec.lr, warmup_steps=int(total_steps(len(rows_.rows), job.config) * spec.warmup_ratio), lr_scheduler_type="linear",
                                 weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
                                 report_to=[], seed=0, use_cpu=not torch.cuda.is_available(),
                                 dataloader_num_workers=0, disable_tqdm=True, bf16=precision == "bf16",
                                 fp16=precision == "fp16", gradient_checkpointing=spec.gradient_checkpointing,
                                 gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting)
        release_free_memory(job.device)
        with PeakMemory(job.device) as mem:
            import time

            t0, c0 = time.perf_counter(), time.process_time()
            out_state = trainer.train()
            elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": tokens, "padded_tokens": padded[0], "train_time_s": elapsed, "cpu_s": cpu_s,
            "peak_mem_mb": mem.peak_mb,
            "growth_mb": mem.growth_mb,
            "final_loss": losses[-1] if losses else None, "steps": out_state.global_step, "precision": precision}


def run_side(side: str, config: str, rows: int) -> dict:
    env = {**os.environ, "TASKFIT_HOME": tempfile.mkdtemp(prefix="tf-bench-")}  # never reuse a trained model
    res = subprocess.run([sys.executable, __file__, "--side", side, "--config", config, "--rows", str(rows)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{side} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--rows", type=int, default=None, help="training rows (default: sft 160, classify 640)")
    ap.add_argument("--side", choices=["taskfit", "textbook"], help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a spec field on both sides, e.g. --set model='\"/path/to/model\"' --set batch_size=32")
    a = ap.parse_args()
    if a.set:
        os.environ["TUNE_BENCH_OVERRIDES"] = json.dumps({k: json.loads(v) for k, v in (x.split("=", 1) for x in a.set)})
    if a.side:
        fn = side_taskfit if a.side == "taskfit" else side_textbook
        print(json.dumps(fn(a.config, a.rows)))
        return
    import torch

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    for config in CONFIGS if a.config == "all" else [a.config]:
        rows = a.rows or {"sft": 160, "classify": 640}[config]
        print(f"\n== {config}: {CONFIGS[config]} {os.environ.get('TUNE_BENCH_OVERRIDES', '')} | {rows} SST-2 train rows, 1 epoch, {device}", flush=True)
        textbook = run_side("textbook", config, rows)
        ours = run_side("taskfit", config, rows)
        for name, r in (("textbook (Trainer + PEFT)", textbook), ("taskfit", ours)):
            print(f"{name:28s} {r['tokens'] / r['train_time_s']:8.1f} tokens/s  {r['train_time_s']:7.1f} s  "
                  f"(CPU {r['cpu_s']:6.1f} s)  {r['precision']:>4s}  "
                  f"padding {100 * (1 - r['tokens'] / r['padded_tokens']):4.1f}%  peak {r['peak_mem_mb']:7.0f} MB "
                  f"(+{r['growth_mb']:5.0f} MB while training)  "
                  f"steps {r['steps']}  final loss {r['final_loss']:.4f}")
        if not torch.cuda.is_available():
            print("no GPU here: the ratios below are CPU figures; the goal is stated for a GPU")
            print(f"CPU-time ratio (textbook / taskfit CPU seconds per token, steadier on a shared machine): "
                  f"{(textbook['cpu_s'] / textbook['tokens']) / (ours['cpu_s'] / ours['tokens']):.2f}x")
        speed = (ours["tokens"] / ours["train_time_s"]) / (textbook["tokens"] / textbook["train_time_s"])
        print(f"speed ratio (tokens/s, taskfit / textbook): {speed:.2f}x  (goal >= 1.5x)")
        print(f"peak memory ratio (taskfit / textbook): {ours['peak_mem_mb'] / textbook['peak_mem_mb']:.2f}  "
              f"(goal <= 1.00); memory added by training: {ours['growth_mb'] / textbook['growth_mb']:.2f}")
        plan, meas = ours["plan"], ours["measured"]
        mem_err = 100 * (plan["peak_mem_mb"] - meas["peak_mem_mb"]) / meas["peak_mem_mb"]
        time_err = 100 * (plan["time_per_epoch_s"] - meas["time_per_epoch_s"]) / meas["time_per_epoch_s"]
        print(f"planner: peak memory {plan['peak_mem_mb']:.0f} MB predicted vs {meas['peak_mem_mb']:.0f} measured "
              f"({mem_err:+.1f}%, goal within 15%); time per epoch {plan['time_per_epoch_s']:.1f} s vs "
              f"{meas['time_per_epoch_s']:.1f} s ({time_err:+.1f}%, goal within 25%)", flush=True)


if __name__ == "__main__":
    main()
