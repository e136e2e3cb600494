"""`taskfit tune --provider openai`: fine-tune at a provider, follow the job, put the model on the leaderboard."""

from __future__ import annotations

import json
from typing import Any

from taskfit.commands import workspace
from taskfit.terminal import console

out = console()
err = console(stderr=True)


def remote_spec(task, options: dict[str, Any]):
    """The job's settings: the task file's ``openai`` model row for the same base model (URL, key variable,
    prices), overridden by the options given."""
    from taskfit.tuning.remote import RemoteSpec

    base: dict[str, Any] = {}
    row = next((m for m in task.config.models if m.backend == "openai" and m.model == options.get("model")), None)
    if row is not None:
        url = row.base_url if not isinstance(row.base_url, list) else row.base_url[0]  # replicas: one API
        base = {"base_url": url, "api_key_env": row.api_key_env, "price_in_per_1m": row.price_in_per_1m,
                "price_out_per_1m": row.price_out_per_1m}
    base.update({k: v for k, v in options.items() if v is not None})
    return RemoteSpec(**{k: v for k, v in base.items() if v is not None})


def run(task_path: str, options: dict[str, Any], *, cancel: bool, evaluate: bool, limit: int | None,
        on_run=None) -> None:
    from taskfit.errors import TaskfitError
    from taskfit.study import prepare
    from taskfit.tuning.remote import cancel_remote, job_key, training_file, tune_remote

    task, dataset = prepare(task_path)
    if not options.get("model"):
        raise TaskfitError("--provider needs --model, the provider's base model name")
    spec = remote_spec(task, options)
    store = workspace().tunes
    train = dataset.split("train")
    if cancel:
        rec = store.by_key(job_key(spec, training_file(task, train, spec)))
        if rec is None or rec.status != "running":
            raise TaskfitError("no running job for these settings")
        rec = cancel_remote(store, rec.id)
        out.print(f"tuned:{rec.id}: job {rec.result['job_id']} {rec.status}")
        return
    rec = tune_remote(task, train, spec, store=store, log=lambda s: err.print(s, style="dim"))
    r = rec.result
    if rec.status != "done":
        e = r.get("error") or {}
        out.print(f"tuned:{rec.id}: job {r.get('job_id')} {rec.status}"
                  + (f": {e.get('message')} ({e.get('code')})" if e else ""))
        raise SystemExit(1)
    out.print(f"tuned:{rec.id} {r['fine_tuned_model']}: {r['trained_tokens'] or 0:,} trained tokens, "
              f"${r['train_cost_usd']:.4f}, {r['train_time_s']:.0f} s (job {r['job_id']})")
    if evaluate:
        _evaluate(task, dataset, rec, limit, on_run)


def _evaluate(task, dataset, rec, limit: int | None, on_run=None) -> None:
    from taskfit.leaderboard import render, rows
    from taskfit.runner import Arm, evaluate
    from taskfit.tuning.remote import model_spec, strategy_row

    ws = workspace()
    arm = Arm(strategy_row(task, rec.spec["strategy"]), model_spec(rec))
    limit = task.config.limit if limit is None else (limit or None)
    records = evaluate(task, dataset, [arm], split=task.config.split, limit=limit, workspace=ws, on_run=on_run)
    table = rows(ws, records)
    out.print(render(table, title=f"{arm.model.label()} on the task's split"))
    out.print(json.dumps({"score": table[0].score, "ci": [table[0].ci_low, table[0].ci_high],
                          "run_id": table[0].run_id, "train_cost_usd": rec.result["train_cost_usd"]}), soft_wrap=True)
