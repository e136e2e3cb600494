"""Fine-tuning through a provider's API: OpenAI's files and fine-tuning jobs endpoints (which Together,
Fireworks and others copy), driven by the official ``openai`` client.

The train split becomes the provider's chat JSONL with the exact messages taskfit sends when it evaluates
(the strategy's system and user turns, the reply's opening words as a zero-weight assistant turn, then the
answer). The file is uploaded, the job created, and its id stored in the ``tunes`` table *before* the
command waits, so an interrupted command re-attaches to the running job instead of starting another. A
finished job becomes a leaderboard model evaluated through the ``openai`` backend, with its training cost
(``trained_tokens`` x the configured price).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit.credentials import check_url, redact
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.provenance import package_versions
from taskfit.taskfile import ModelSpec, StrategySpec, Task
from taskfit.tuning.store import TuneRecord, TuneStore

TERMINAL = ("succeeded", "failed", "cancelled")


class RemoteSpec(BaseModel):
    """One fine-tuning job at a provider; every field has a command-line option of ``taskfit tune``."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai"] = Field("openai", description="API family: openai (files + fine_tuning/jobs).")
    model: str = Field(description="Base model name at the provider, e.g. gpt-4o-mini-2024-07-18.")
    base_url: str = Field("https://api.openai.com/v1", description="API root, ending in /v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    method: Literal["supervised", "dpo"] = Field(
        "supervised", description="supervised: learn the gold answers; dpo: learn from preference pairs.")
    strategy: str = Field("zero_shot", description="Strategy whose prompt the rows use (and the model is "
                          "evaluated with).")
    preferences: str | None = Field(None, description="dpo: JSONL of {prompt, chosen, rejected} records.")
    epochs: int | None = Field(None, ge=1, description="n_epochs (default: the provider's choice).")
    batch_size: int | None = Field(None, ge=1, description="batch_size (default: the provider's choice).")
    lr_multiplier: float | None = Field(None, gt=0, description="learning_rate_multiplier (default: auto).")
    beta: float | None = Field(None, gt=0, description="dpo: beta (default: auto).")
    train_limit: int | None = Field(None, ge=1, description="Train on the first N train rows only.")
    seed: int = Field(0, description="Seed sent with the job.")
    suffix: str | None = Field(None, max_length=64, description="Suffix in the fine-tuned model's name.")
    price_train_per_1m: float = Field(0.0, ge=0, description="$ per million trained tokens.")
    price_in_per_1m: float = Field(0.0, ge=0, description="$ per million input tokens of the tuned model.")
    price_out_per_1m: float = Field(0.0, ge=0, description="$ per million output tokens of the tuned model.")
    poll_s: float = Field(10.0, gt=0, description="Seconds between status polls while the job runs.")

    def hyperparameters(self) -> dict[str, Any]:
        h = {"n_epochs": self.epochs, "batch_size": self.batch_size, "learning_rate_multiplier": self.lr_multiplier}
        if self.method == "dpo":
            h["beta"] = self.beta
        return {k: v for k, v in h.items() if v is not None}


# -- training file -----------------------------------------------------------------------------------


def chat_rows(task: Task, examples: list[Example], strategy: str) -> list[dict[str, Any]]:
    """One ``{"messages": [...]}`` row per example: the evaluation prompt, then the answer as the
    assistant's (weighted) reply; a prefilled reply opening is kept as an unweighted assistant turn."""
    from taskfit.tuning.data import sft_target

    prompt, parts = _prompt_fn(task, examples, strategy)
    out = []
    for ex in examples:
        msgs = [dict(m) for m in prompt(ex)]
        for m in msgs:
            if m["role"] == "assistant":
                m["weight"] = 0  # the reply's opening words: shown, not learned
        answer = sft_target(ex, parts.response_prefix, task.config.labels).strip()
        out.append({"messages": [*msgs, {"role": "assistant", "content": answer, "weight": 1}]})
    return out


def dpo_rows(task: Task, pairs: Iterable[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    """OpenAI's preference format: ``input.messages``, ``preferred_output`` and ``non_preferred_output``."""
    out = []
    for p in pairs:
        msgs = p["messages"] if "messages" in p else [{"role": "user", "content": p["prompt"]}]
        out.append({"input": {"messages": msgs},
                    "preferred_output": [{"role": "assistant", "content": p["chosen"]}],
                    "non_preferred_output": [{"role": "assistant", "content": p["rejected"]}]})
    return out


def _prompt_fn(task: Task, examples: list[Example], strategy: str):
    from taskfit.prompts import prompt_parts
    from taskfit.tuning.job import training_prompt

    prompt = training_prompt(task, strategy_row(task, strategy), examples, "generate")
    if prompt is None:
        raise TaskfitError(f"strategy {strategy!r} has no single prompt to train on; use zero_shot, structured "
                           f"or persona", field="strategy")
    return prompt, prompt_parts(task)


def strategy_row(task: Task, strategy: str) -> StrategySpec:
    return next((s for s in task.config.strategies if s.label() == strategy or s.name == strategy),
                StrategySpec(name=strategy))


def training_file(task: Task, train_examples: list[Example], spec: RemoteSpec) -> bytes:
    """The JSONL the provider trains on."""
    if spec.method == "dpo":
        if not spec.preferences:
            raise TaskfitError("method dpo needs preference pairs: --preferences FILE.jsonl "
                               "(records with prompt, chosen, rejected)", field="preferences")
        from taskfit.tuning.preferences import load_pairs

        rows = dpo_rows(task, load_pairs(Path(spec.preferences)), spec.strategy)
    else:
        rows = chat_rows(task, train_examples[: spec.train_limit], spec.strategy)
    if not rows:
        raise TaskfitError("no training rows: the train split is empty", field="data.train")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


# -- the job -----------------------------------------------------------------------------------------


def client_for(spec: RemoteSpec):
    """The official client for ``spec``'s provider; raises TaskfitError on a bad URL or a missing key."""
    try:
        import openai
    except ImportError as e:
        raise TaskfitError("remote fine-tuning needs the openai client: pip install 'taskfit[remote]'") from e
    check_url(spec.base_url, "base_url")
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise TaskfitError(f"the API key is read from ${spec.api_key_env}, which is not set", field="api_key_env")
    return openai.OpenAI(api_key=key, base_url=spec.base_url, max_retries=4, timeout=60.0)


def job_key(spec: RemoteSpec, data: bytes) -> str:
    """Identity of a job: same provider, base, method, hyperparameters and file -> same tuned model."""
    ident = {"provider": spec.provider, "base_url": spec.base_url, "model": spec.model, "method": spec.method,
             "hyper": spec.hyperparameters(), "seed": spec.seed, "suffix": spec.suffix,
             "data": hashlib.sha256(data).hexdigest()}
    return "remote-" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def tune_remote(task: Task, train_examples: list[Example], spec: RemoteSpec, *, store: TuneStore, client=None,
                log: Callable[[str], None] = lambda s: None, sleep: Callable[[float], None] = time.sleep
                ) -> TuneRecord:
    """Upload, create (or re-attach to) and follow the job ``spec`` describes; returns its record, whose
    status is done, failed or cancelled."""
    check_url(spec.base_url, "base_url")  # before the spec is stored with the job's record
    data = training_file(task, list(train_examples), spec)
    key = job_key(spec, data)
    rec = store.by_key(key)
    if rec and rec.status == "done":
        log(f"already trained: tuned:{rec.id} ({rec.result.get('fine_tuned_model')})")
        return rec
    if rec is None or rec.status in ("failed", "cancelled"):  # a new attempt; the old record stays as history
        rec = store.create(key=key, task_name=task.config.name, task_path=str(task.path),
                           method=f"{spec.provider}:{spec.method}", objective="dpo" if spec.method == "dpo" else "sft",
                           base_model=f"{spec.provider}:{spec.model}", data_hash=hashlib.sha256(data).hexdigest()[:16],
                           seed=spec.seed, spec=spec.model_dump(), versions=package_versions(task.root))
    client = client or client_for(spec)
    result = dict(rec.result)
    try:
        if "file_id" not in result:
            f = client.files.create(file=(f"{task.config.name}-{rec.id}.jsonl", data), purpose="fine-tune")
            result.update(file_id=f.id, file_bytes=f.bytes, rows=data.count(b"\n"))
            store.update(rec.id, result)
            log(f"uploaded {f.bytes:,} bytes ({result['rows']} rows) as {f.id}")
        if "job_id" not in result:
            job = _find_job(client, rec.id) or _create_job(client, spec, result["file_id"], rec.id)
            result.update(job_id=job.id, provider=spec.provider)
            store.update(rec.id, result)  # stored before waiting: the resume point
            log(f"created job {job.id} on {spec.model}")
        else:
            log(f"re-attaching to job {result['job_id']}")
        job = follow(client, result["job_id"], spec.poll_s, log=log, sleep=sleep)
    except _api_errors() as e:
        raise TaskfitError(f"{spec.provider} fine-tuning: {redact(str(e), [os.environ.get(spec.api_key_env, '')])}"
                           f" (run the same command again to resume)") from e
    result.update(status=job.status, trained_tokens=job.trained_tokens, fine_tuned_model=job.fine_tuned_model,
                  train_time_s=float((job.finished_at or time.time()) - job.created_at),
                  hyperparameters=job.hyperparameters.model_dump(exclude_none=True))
    if job.status == "succeeded":
        result["train_cost_usd"] = (job.trained_tokens or 0) * spec.price_train_per_1m / 1e6
        store.finish(rec.id, result)
    else:
        result["error"] = job.error.model_dump() if job.error else None
        store.finish(rec.id, result, status=job.status)
    return store.get(rec.id)


def _create_job(client, spec: RemoteSpec, file_id: str, tune_id: str):
    hyper = spec.hyperparameters()
    method: dict[str, Any] = {"type": spec.method, spec.method: {"hyperparameters": hyper} if hyper else {}}
    return client.fine_tuning.jobs.create(model=spec.model, training_file=file_id, method=method, seed=spec.seed,
                                          metadata={"taskfit_tune": tune_id},
                                          **({"suffix": spec.suffix} if spec.suffix else {}))


def _find_job(client, tune_id: str):
    """A job created for this record whose id was not stored (the command stopped in between)."""
    for job in client.fine_tuning.jobs.list(limit=100, metadata={"taskfit_tune": tune_id}).data:
        if (job.metadata or {}).get("taskfit_tune") == tune_id:
            return job
    return None


def follow(client, job_id: str, poll_s: float, *, log: Callable[[str], None] = lambda s: None,
           sleep: Callable[[float], None] = time.sleep):
    """Poll the job until it ends, logging each new event once (oldest first); returns the final job."""
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = client.fine_tuning.jobs.list_events(job_id, limit=100).data  # newest first
        for ev in reversed(events):
            if ev.id not in seen:
                seen.add(ev.id)
                log(describe_event(ev))
        if job.status in TERMINAL:
            return job
        sleep(poll_s)


def describe_event(ev) -> str:
    data = ev.data if isinstance(ev.data, dict) else {}
    if ev.type == "metrics" and "step" in data:
        total = data.get("total_steps")
        loss = data.get("train_loss")
        return (f"step {data['step']}" + (f"/{total}" if total else "")
                + (f" loss {loss:.4f}" if isinstance(loss, int | float) else ""))
    return f"[{ev.level}] {ev.message}"


def cancel_remote(store: TuneStore, tune_id: str, client=None) -> TuneRecord:
    """Cancel a running remote job and record it as cancelled."""
    rec = store.get(tune_id.removeprefix("tuned:"))
    job_id = rec.result.get("job_id")
    if not job_id:
        raise TaskfitError(f"tuned:{rec.id} has no remote job to cancel")
    client = client or client_for(RemoteSpec(**rec.spec))
    job = client.fine_tuning.jobs.cancel(job_id)
    store.finish(rec.id, {**rec.result, "status": job.status}, status=job.status)
    return store.get(rec.id)


def _api_errors() -> tuple[type[BaseException], ...]:
    import openai

    return (openai.APIError,)


# -- the tuned model on the leaderboard --------------------------------------------------------------


def model_spec(rec: TuneRecord) -> ModelSpec:
    """The fine-tuned model as an ``openai`` backend model; ``path`` links the row to its training record."""
    spec = RemoteSpec(**rec.spec)
    ft = rec.result.get("fine_tuned_model")
    if rec.status != "done" or not ft:
        raise TaskfitError(f"tuned:{rec.id} has no fine-tuned model (status {rec.status})")
    return ModelSpec(backend="openai", name=ft, model=ft, base_url=spec.base_url, api_key_env=spec.api_key_env,
                     path=f"tuned:{rec.id}", price_in_per_1m=spec.price_in_per_1m,
                     price_out_per_1m=spec.price_out_per_1m)
