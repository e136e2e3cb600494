"""`taskfit tune`, `taskfit plan` and `taskfit merge`: fine-tune a model for a task, plan it first, fold an
adapter into its base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from taskfit.commands import workspace
from taskfit.commands.export import TrackingUriOpt, TrackOpt, end_tracking, start_tracking
from taskfit.terminal import console

out = console()  # names and model text are printed as given, never read as markup
err = console(stderr=True)

TaskArg = Annotated[str, typer.Argument(help="Path to the task file (YAML).")]


def _spec(task, method, objective, model, tuning_row, overrides: dict[str, Any]):
    """The spec from a task file's `tuning:` row (by index or name) and/or command-line options."""
    from taskfit.errors import TaskfitError
    from taskfit.tuning.spec import TuneSpec

    base: dict[str, Any] = {}
    rows = task.config.tuning
    if tuning_row is not None:
        match = [s for i, s in enumerate(rows) if str(i) == tuning_row or s.label() == tuning_row]
        if not match:
            raise TaskfitError(f"--tuning {tuning_row!r}: not a row of the task file's tuning list "
                               f"({', '.join(s.label() for s in rows) or 'empty'})")
        base = match[0].model_dump(exclude_unset=True)
    for key, value in {"method": method, "objective": objective, "model": model, **overrides}.items():
        if value is not None:
            base[key] = value
    return TuneSpec(**base)


def register(app: typer.Typer) -> None:
    """Add `tune`, `plan` and `merge` to the `taskfit` app."""

    @app.command()
    def tune(
        task: TaskArg,
        method: Annotated[str | None, typer.Option(help="full, top_n, head, lora, dora, qlora, prefix, "
                                                        "prompt_tuning or ia3 (default lora).")] = None,
        objective: Annotated[str | None, typer.Option(help="sft, classify, pretrain or dpo (default sft).")] = None,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Base model: bundled, minilm, a folder "
                                                  "or a .gguf file.")] = None,
        tuning: Annotated[str | None, typer.Option(help="Start from this row of the task file's `tuning:` "
                                                   "list (index or name).")] = None,
        epochs: Annotated[float | None, typer.Option(help="Passes over the training rows.")] = None,
        max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
        lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the method's).")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Rows per step.")] = None,
        rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
        alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default 2 x rank).")] = None,
        top_n: Annotated[int | None, typer.Option(help="top_n: layers that train.")] = None,
        train_limit: Annotated[int | None, typer.Option(help="Train on the first N train rows only.")] = None,
        max_length: Annotated[int | None, typer.Option(help="Longest training sequence in tokens.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for initialisation, data order, dropout.")] = None,
        allow_fallback: Annotated[bool, typer.Option(help="qlora without CUDA: train plain lora.")] = False,
        device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
        evaluate: Annotated[bool, typer.Option(help="Score the tuned model on the task's split afterwards.")] = True,
        limit: Annotated[int | None, typer.Option(help="Rows of the split to score (0: all).")] = None,
        provider: Annotated[str | None, typer.Option(help="Fine-tune at a provider's API instead (openai); "
                                                     "--model names its base model.")] = None,
        base_url: Annotated[str | None, typer.Option(help="--provider: API root (default: the task's openai "
                                                     "model row for --model, else OpenAI's).")] = None,
        api_key_env: Annotated[str | None, typer.Option(help="--provider: variable holding the API key.")] = None,
        price_train_per_1m: Annotated[float | None, typer.Option(help="--provider: $ per million trained "
                                                                 "tokens.")] = None,
        preferences: Annotated[str | None, typer.Option(help="--objective dpo: JSONL of prompt, chosen, rejected, "
                                                        "or `review` (the review app's choices); unset: "
                                                        "self-generated pairs.")] = None,
        suffix: Annotated[str | None, typer.Option(help="--provider: suffix of the tuned model's name.")] = None,
        poll_s: Annotated[float | None, typer.Option(help="--provider: seconds between status polls.")] = None,
        cancel: Annotated[bool, typer.Option(help="--provider: cancel the running job for these settings.")] = False,
        track: TrackOpt = None, tracking_uri: TrackingUriOpt = None,
    ) -> None:
        """Fine-tune a model on the task's train split, store it as tuned:<id>, and score it."""
        from taskfit.study import prepare
        from taskfit.tuning.distributed import is_main_process

        tracker = start_tracking(track, tracking_uri)  # exports the tuned model's evaluation, when it runs
        if preferences and preferences != "review":
            preferences = str(Path(preferences).resolve())
        if provider:
            from taskfit.commands import tune_remote

            tune_remote.run(task, {
                "provider": provider, "model": model, "base_url": base_url, "api_key_env": api_key_env,
                "price_train_per_1m": price_train_per_1m, "preferences": preferences, "suffix": suffix,
                "poll_s": poll_s, "epochs": int(epochs) if epochs else None, "batch_size": batch_size,
                "train_limit": train_limit, "seed": seed,
                "method": "dpo" if objective == "dpo" else None}, cancel=cancel,
                evaluate=evaluate, limit=limit, on_run=tracker.on_run if tracker else None)
            end_tracking(tracker)
            return
        from taskfit.tuning.tune import tune as run_tune

        task_obj, dataset = prepare(task)
        spec = _spec(task_obj, method, objective, model, tuning, {
            "epochs": epochs, "max_steps": max_steps, "lr": lr, "batch_size": batch_size, "rank": rank,
            "alpha": alpha, "top_n": top_n, "train_limit": train_limit, "max_length": max_length, "seed": seed,
            "allow_fallback": allow_fallback or None, "device": device, "preferences": preferences})
        rec = run_tune(task_obj, dataset.split("train"), spec, store=workspace().tunes, runs=workspace().runs,
                       log=lambda s: err.print(s, style="dim"),
                       on_step=_step_printer(spec))
        if not is_main_process():  # one of several `accelerate launch` processes: the main one reports
            return
        print_tune(rec)
        if evaluate and rec.status == "done":
            _evaluate(task, rec, spec, limit, on_run=tracker.on_run if tracker else None)
            end_tracking(tracker)

    @app.command()
    def plan(
        task: Annotated[str | None, typer.Argument(help="Path to the task file (YAML); not needed with "
                                                   "--inference.")] = None,
        method: Annotated[str | None, typer.Option(help="Tuning method (default lora).")] = None,
        objective: Annotated[str | None, typer.Option(help="sft, classify or pretrain.")] = None,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Base model.")] = None,
        tuning: Annotated[str | None, typer.Option(help="A row of the task file's `tuning:` list.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Rows per step.")] = None,
        epochs: Annotated[float | None, typer.Option(help="Passes over the training rows.")] = None,
        max_steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
        train_limit: Annotated[int | None, typer.Option(help="First N train rows only.")] = None,
        params: Annotated[float | None, typer.Option(help="Also print the classic memory table for a model "
                                                     "of this many parameters, e.g. 7e9.")] = None,
        device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
        processes: Annotated[int | None, typer.Option(help="Data-parallel processes (GPUs) to plan for "
                                                      "(default: as launched).")] = None,
        zero_stage: Annotated[int | None, typer.Option(min=0, max=3, help="ZeRO stage to plan for: 1 shards "
                                                       "optimizer states, 2 also gradients, 3 (or FSDP) also "
                                                       "weights.")] = None,
        mixed_precision: Annotated[str | None, typer.Option(help="auto, no, bf16 or fp16.")] = None,
        gradient_checkpointing: Annotated[bool | None, typer.Option(help="Plan with gradient "
                                                                    "checkpointing.")] = None,
        inference: Annotated[bool, typer.Option(help="Print the serving-memory table for --params at each "
                                                "precision instead.")] = False,
    ) -> None:
        """Predict peak memory and time per epoch of a tuning run, before training (probes a few real steps)."""
        if inference:
            from taskfit.errors import TaskfitError
            from taskfit.shrink import serving_table

            if not params:
                raise TaskfitError("--inference needs --params, the model's parameter count (e.g. 7e9)")
            st = Table(title=f"Serving memory for the weights of {params:,.0f} parameters (add the KV cache and "
                       f"activations)", title_justify="left")
            for col in ("precision", "bytes/param", "GB"):
                st.add_column(col, justify="left" if col == "precision" else "right")
            for r in serving_table(params):
                st.add_row(str(r["precision"]), f"{r['bytes_per_param']:g}", f"{r['gb']:,.2f}")
            out.print(st)
            return
        if task is None:
            raise typer.BadParameter("the task file is required (except with --inference)")
        from taskfit.study import prepare
        from taskfit.tuning import plan as tplan
        from taskfit.tuning.methods import count_parameters
        from taskfit.tuning.train import rss_bytes, total_steps
        from taskfit.tuning.tune import apply_method, build_model, prepare_rows, resolve

        task_obj, dataset = prepare(task)
        spec = _spec(task_obj, method, objective, model, tuning, {
            "batch_size": batch_size, "epochs": epochs, "max_steps": max_steps, "train_limit": train_limit,
            "device": device, "mixed_precision": mixed_precision, "gradient_checkpointing": gradient_checkpointing})
        job = resolve(task_obj, dataset.split("train"), spec)
        data = prepare_rows(job)
        runtime = rss_bytes()
        m = apply_method(job, build_model(job))
        p = tplan.predict(job, data, m, runtime_bytes=runtime, processes=processes, zero_stage=zero_stage)
        trainable, total = count_parameters(m)
        scale = (f", {p.processes} processes, ZeRO {p.zero_stage}" if p.processes > 1 or p.zero_stage else "") + \
            (f", {p.mixed_precision}" if p.mixed_precision != "no" else "") + \
            (", checkpointing" if p.gradient_checkpointing else "")
        t = Table(title=f"Plan: {spec.label()} on {job.device.type} ({len(data.rows)} rows, "
                  f"{total_steps(len(data.rows), job.config)} steps"
                  f"{scale}; MB per process)", title_justify="left")
        t.add_column("part")
        t.add_column("MB", justify="right")
        for name, mb in [("weights", p.weights_mb), ("gradients", p.gradients_mb), ("AdamW states", p.optimizer_mb),
                         (f"activations (largest batch {p.largest_batch[0]} x {p.largest_batch[1]} tokens)",
                          p.activations_mb), ("output logits", p.logits_mb), ("runtime (CPU process)", p.runtime_mb),
                         ("peak", p.peak_mem_mb)]:
            t.add_row(name, f"{mb:,.0f}")
        out.print(t)
        out.print(f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
        out.print(f"time: {p.time_per_epoch_s:,.0f} s per epoch ({p.padded_tokens_per_epoch:,} padded tokens, "
                  f"{p.probe_s_per_token * 1000:.2f} ms per token measured on {len(p.notes) and 'a probe'}), "
                  f"{p.total_time_s:,.0f} s for the run")
        if params:
            ct = Table(title=f"Weights + gradients + AdamW states for {params:,.0f} parameters (no activations)",
                       title_justify="left")
            ct.add_column("method")
            ct.add_column("GB", justify="right")
            for row in tplan.classic_table(params):
                ct.add_row(row["method"], f"{row['gb']:,.1f}")
            out.print(ct)

    @app.command()
    def merge(
        tuned: Annotated[str, typer.Argument(help="A tuned model id (tuned:<id> or <id>).")],
        output: Annotated[str | None, typer.Option("-o", help="Folder for the merged model.")] = None,
    ) -> None:
        """Fold a LoRA-style adapter into its base weights and save a standalone model folder."""
        from taskfit.tuning.adapters import merge as merge_adapter

        folder = merge_adapter(tuned.removeprefix("tuned:"), output, store=workspace().tunes)
        out.print(f"merged model: {folder} (use it as `--model {folder}`)")


def _step_printer(spec):
    def on_step(p: dict[str, float]) -> None:
        if p["step"] == 1 or p["step"] % 10 == 0:
            err.print(f"{spec.label()}: step {p['step']:.0f} epoch {p['epoch']:.2f} loss {p['loss']:.4f} "
                      f"({p['time_s']:.0f} s)", style="dim")
    return on_step


def print_tune(rec) -> None:
    r = rec.result
    if rec.status != "done":
        out.print(f"tuned:{rec.id} stopped at step {r.get('steps_done')} of {r.get('steps_total')}; run the same "
                  f"command to resume")
        return
    out.print(Text.assemble((f"tuned:{rec.id}", "bold"), f" {rec.spec.get('method')} {rec.objective} on "
                            f"{rec.base_model}: {r['train_time_s']:.0f} s, peak {r['peak_mem_mb']:.0f} MB, "
                            f"{r['trainable_params']:,} trainable ({r['trainable_pct']:.2f}%), "
                            f"{r['adapter_mb']:.2f} MB trained weights"))
    if r.get("fallback"):
        out.print(r["fallback"], style="yellow")
    plan, meas = r.get("plan") or {}, r.get("measured") or {}
    if plan and meas:
        out.print(f"plan vs measured: peak memory {plan['peak_mem_mb']:.0f} vs {meas['peak_mem_mb']:.0f} MB "
                  f"({_err(plan['peak_mem_mb'], meas['peak_mem_mb'])}), time per epoch "
                  f"{plan['time_per_epoch_s']:.0f} vs {meas['time_per_epoch_s']:.0f} s "
                  f"({_err(plan['time_per_epoch_s'], meas['time_per_epoch_s'])})")
    f = r.get("forgetting")
    if f:
        out.print(f"forgetting ({f['general_task']}): {f['score_before']} -> {f['score_after']}"
                  + (f"; perplexity {f['ppl_before']:.2f} -> {f['ppl_after']:.2f}" if f.get("ppl_before") else ""))
    print_before_after(r.get("before_after") or [])


def print_before_after(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = Table(title="Predictions before and after training", title_justify="left")
    for col in ("input", "expected", "before", "after"):
        t.add_column(col)
    for row in rows:
        t.add_row(row["input"], row["target"], row.get("before", ""), row.get("after", ""))
    out.print(t)


def _err(predicted: float, measured: float) -> str:
    return f"{100 * (predicted - measured) / measured:+.0f}%" if measured else "n/a"


def _evaluate(task: str, rec, spec, limit: int | None, on_run=None) -> None:
    from taskfit.leaderboard import render
    from taskfit.study import prepare, run_study
    from taskfit.tuning.tune import Job

    row = Job.strategy_for(prepare(task)[0], spec)
    _, table = run_study(task, workspace=workspace(), strategy_names=[row.label()],
                         model_names=[f"tuned:{rec.id}"], limit=limit, on_run=on_run)
    out.print(render(table, title=f"tuned:{rec.id} on the task's split"))
    out.print(json.dumps({"score": table[0].score, "ci": [table[0].ci_low, table[0].ci_high],
                          "run_id": table[0].run_id}))
