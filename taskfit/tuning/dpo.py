"""Preference tuning (DPO): TRL's ``DPOTrainer`` on a PEFT adapter, whose disabled state is the reference
model, so no second copy of the base is loaded.

Pairs come from a JSONL file (``prompt, chosen, rejected``, as the review app exports them), from the review
app's choices stored in the workspace, or are self-generated: k sampled answers per train input, ranked by
the task's metric against the gold answer, best kept as chosen and worst as rejected.

The objective owns its keys of a ``tuning:`` row (``Options``), checked when the task is prepared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest
from taskfit.backends.hf import prompt_text
from taskfit.backends.tuned import live_backend
from taskfit.errors import TaskfitError
from taskfit.metrics import build_metric
from taskfit.parsing import parse_output
from taskfit.review import preference_pairs as review_pairs
from taskfit.tuning.preferences import load_pairs
from taskfit.tuning.train import rss_bytes

LR = 1e-4  # adapters; full-weight DPO usually runs near 5e-6


class Options(BaseModel):
    """Keys of a `tuning:` row with `objective: dpo`."""

    model_config = ConfigDict(extra="forbid")

    preferences: str | None = Field(None, description="Pairs from a JSONL file (prompt, chosen, rejected; "
                                    "relative to the task file), `review` (the review app's choices for this "
                                    "task), or unset: self-generated from the train split.")
    dpo_samples: int = Field(4, ge=2, description="Self-generated pairs: answers sampled per train input "
                             "(best vs worst by the task's metric).")
    dpo_beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    dpo_loss: str = Field("sigmoid", description="TRL loss type (sigmoid, ipo, hinge, robust, ...).")


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
    resumed_from: int = 0  # the step of the checkpoint the run resumed from
    finished: bool = True  # False: stopped on request (``stop_after``), its checkpoint is the resume point


def as_pairs(records: list[dict[str, Any]], tokenizer, chat_template: bool) -> list[Pair]:
    """Plain-text records (``prompt`` is the user's turn) rendered through the model's chat template."""
    return [Pair(prompt_text(tokenizer, [{"role": "user", "content": r["prompt"]}], chat_template),
                 r["chosen"], r["rejected"]) for r in records]


def self_generated(examples, prompt_fn, backend, metric, parse: Callable[[str], str | None], *,
                   k: int, seed: int, prompt_text: Callable[[Any], str], lead: str = "",
                   max_tokens: int = 16) -> list[Pair]:
    """For each example, ``k`` sampled replies ranked by ``metric`` against gold: best vs worst, when they
    differ in score and in text."""
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


PROGRESS = "taskfit_progress.json"  # beside each checkpoint: the curve so far and the training time spent


def checkpointing_arg(config_cls: type) -> dict[str, bool]:
    """TRL's trainer configs turn activation checkpointing on through ``gradient_checkpointing``, which
    transformers now names ``activation_checkpointing`` (warning with a FutureWarning on every config built
    with the old name alone): the same setting under the name the installed version takes."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    if "activation_checkpointing" not in names:
        return {}
    default = next(f.default for f in dataclasses.fields(config_cls) if f.name == "gradient_checkpointing")
    return {"activation_checkpointing": bool(default)}


def train_dpo(model, tokenizer, pairs: list[Pair], *, output_dir: Path, lr: float, beta: float,
              loss_type: str, batch_size: int, epochs: float, max_steps: int | None, max_length: int, seed: int,
              save_steps: int = 50, stop_after: int | None = None,
              on_step: Callable[[dict[str, float]], None] | None = None) -> DPOResult:
    """Train the adapter of ``model`` (a PEFT model) on ``pairs``; the adapter switched off is the reference.

    A checkpoint goes to ``output_dir`` every ``save_steps`` steps, and a run whose ``output_dir`` holds one
    resumes from it (TRL's ``resume_from_checkpoint``: adapter, optimizer, schedule, RNG states, position in the
    data). ``stop_after`` ends the run after that many steps, its checkpoint written first (as a crash right
    after a save would), for tests."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise TaskfitError("no preference pairs to train on")
    if not hasattr(model, "peft_config"):
        raise TaskfitError("objective dpo trains a PEFT adapter (lora, dora, ia3): the adapter switched off is "
                           "the reference model", field="tuning[].method")
    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    saved = json.loads((Path(last) / PROGRESS).read_text()) if last and (Path(last) / PROGRESS).is_file() \
        else {"time_s": 0.0, "curve": []}
    curve: list[dict[str, float]] = list(saved["curve"])
    peak = [rss_bytes()]
    start = time.perf_counter() - saved["time_s"]

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
            if stop_after and state.global_step >= stop_after:
                control.should_save = control.should_training_stop = True

        def on_save(self, args, state, control, **kw):  # called once the checkpoint is written
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / PROGRESS).write_text(json.dumps({"time_s": time.perf_counter() - start, "curve": curve}))

    config = DPOConfig(
        output_dir=str(output_dir), learning_rate=lr, beta=beta, loss_type=[loss_type],
        per_device_train_batch_size=batch_size, num_train_epochs=epochs, max_steps=max_steps or -1,
        max_length=max_length, seed=seed, logging_steps=1, save_strategy="steps", save_steps=save_steps,
        save_total_limit=1, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        dataloader_num_workers=0, **checkpointing_arg(DPOConfig))
    trainer = DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer,
                         callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # progress goes through on_step
    out = trainer.train(resume_from_checkpoint=last)
    return DPOResult(steps=out.global_step, train_time_s=time.perf_counter() - start,
                     peak_mem_mb=peak[0] / 2**20, curve=curve,
                     resumed_from=int(Path(last).name.rsplit("-", 1)[-1]) if last else 0,
                     finished=trainer.state.global_step >= trainer.state.max_steps)


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


def preference_pairs(options: Options, *, root: Path, task_name: str, runs, tokenizer, chat_template: bool,
                     sample: Callable[[], list[Pair]]) -> tuple[list[Pair], str]:
    """The run's pairs and where they came from: the review app's choices in ``runs``, a JSONL file (relative to
    ``root``), or ``sample()`` (self-generated pairs)."""
    if options.preferences == "review":
        if runs is None:
            raise TaskfitError("preferences: review reads the workspace's review choices; none was given")
        records = review_pairs(runs, task_name)
        if not records:
            raise TaskfitError(f"no preference pairs for task {task_name!r} in the review app yet "
                               f"(pairwise choices, or correct and incorrect labels)", field="tuning[].preferences")
        return as_pairs(records, tokenizer, chat_template), "review"
    if options.preferences:
        path = root / options.preferences
        return as_pairs(load_pairs(path), tokenizer, chat_template), str(path)
    pairs = sample()
    if not pairs:
        raise TaskfitError(f"no self-generated pairs: the {options.dpo_samples} samples of every train input scored "
                           f"alike; raise dpo_samples or give preferences", field="tuning[].preferences")
    return pairs, f"self-generated (k={options.dpo_samples})"


def sampled_pairs(task, examples, prompt, model, tokenizer, device: torch.device, chat_template: bool,
                  response_prefix: str, options: Options, seed: int) -> list[Pair]:
    """Self-generated pairs: ``options.dpo_samples`` replies of ``model`` to ``prompt`` per example, scored by the
    task's first metric."""
    c = task.config
    metric = build_metric(c.metrics[0].name, c.metrics[0].options)
    backend = live_backend(model, tokenizer, device, chat_template, "dpo-sampling")
    model.eval()
    return self_generated(examples, prompt, backend, metric,
                          lambda t: parse_output(t, c.parse, c.labels, c.label_aliases).value,
                          k=options.dpo_samples, seed=seed,
                          prompt_text=lambda m: prompt_text(tokenizer, m, chat_template),
                          lead=" " if response_prefix[-1:] not in ("", " ", "\n") else "")
