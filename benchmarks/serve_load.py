"""Load on `taskfit serve`: N concurrent openai clients on loopback against the bundled model, in one process.

Sides (same requests, same model weights loaded once, call cache off so every request runs the model):
  batched         serve.max_batch = --max-batch: model calls of concurrent requests merged into one batch;
  one-at-a-time   serve.max_batch = 1: the model answers one request's call at a time, in arrival order.

Each of --clients clients sends --requests requests one after another (distinct test rows, so nothing is
repeated); the whole side is bounded by --timeout-s. Prints requests/s, client-side p50/p99 latency, errors,
lost requests (sent but never answered), the mean model batch, the batching gain (requests/s ratio) and how
often the two sides gave the same answer.

    .venv/bin/python benchmarks/serve_load.py --clients 50 --requests 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=str(ROOT / "examples/sst2/task.yaml"),
                    help="task file; the default scores labels, examples/squad/task.yaml generates")
    ap.add_argument("--strategy", default="zero_shot")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2, help="requests per client, sent one after another")
    ap.add_argument("--max-tokens", type=int, default=16, help="generation limit per model call")
    ap.add_argument("--max-batch", type=int, default=16, help="batched side: model requests per batch")
    ap.add_argument("--timeout-s", type=float, default=600, help="bound on each side's wall time")
    ap.add_argument("--rounds", type=int, default=2, help="times each side runs, alternating")
    args = ap.parse_args()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(name, None)  # loopback only

    from taskfit.runner import Arm, BackendPool
    from taskfit.serve.pipeline import Pipeline
    from taskfit.study import prepare, select_arms
    from taskfit.workspace import Workspace

    workspace = Workspace.open(tempfile.mkdtemp(prefix="taskfit-serve-bench-"))

    task, dataset = prepare(args.task)
    task.config.max_tokens = args.max_tokens
    (arm,) = select_arms(task, [args.strategy], ["bundled"])
    arm = Arm(arm.strategy, arm.model.model_copy(update={"batch_size": args.max_batch}))
    rows = dataset.split(task.config.split)
    total = args.clients * args.requests
    inputs = task.config.inputs
    prompts = [r.fields[inputs[0]] if len(inputs) == 1 else json.dumps({k: r.fields[k] for k in inputs})
               for r in (rows * (total // len(rows) + 1))[:total]]
    pool = BackendPool(workspace)  # the model is loaded once and shared by both sides
    results: dict[str, list[dict[str, Any]]] = {"batched": [], "one-at-a-time": []}
    for round_ in range(1, args.rounds + 1):
        # the sides alternate, so a change in the machine's load does not favour one of them
        for side, max_batch in (("batched", args.max_batch), ("one-at-a-time", 1)):
            task.config.serve = task.config.serve.model_copy(update={"max_batch": max_batch, "cache": False,
                                                                     "max_concurrent": args.clients})
            r = run_side(Pipeline(task, dataset, arm, workspace, pool), prompts, args)
            results[side].append(r)
            print(f"round {round_} {side:>14}: {r['ok']}/{total} ok in {r['wall_s']:.1f} s = {r['rps']:.2f} req/s; "
                  f"latency p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; errors {r['errors']}, lost "
                  f"{r['lost']}; mean model batch {r['mean_batch']:.1f}", flush=True)
    rps = {side: sum(r["ok"] for r in rs) / sum(r["wall_s"] for r in rs) for side, rs in results.items()}
    p50 = {side: statistics.median([r["p50_ms"] for r in rs]) for side, rs in results.items()}
    errors = sum(r["errors"] + r["lost"] for rs in results.values() for r in rs)
    print(f"over {args.rounds} round(s): batched {rps['batched']:.2f} req/s vs one-at-a-time "
          f"{rps['one-at-a-time']:.2f} req/s; batching gain {rps['batched'] / rps['one-at-a-time']:.2f}x requests/s, "
          f"median p50 latency {p50['one-at-a-time'] / p50['batched']:.2f}x lower; errors + lost: {errors}")
    b, o = results["batched"][0], results["one-at-a-time"][0]
    same = sum(1 for x, y in zip(b["answers"], o["answers"], strict=True) if x is not None and x == y)
    print(f"same answer on both sides (round 1): {same}/{total}")
    print(f"setup: {args.clients} clients x {args.requests} requests, {Path(args.task).parent.name}/{args.strategy}, "
          f"max_tokens {args.max_tokens}, max_batch {args.max_batch}, bundled model, {os.cpu_count()} CPUs")


def run_side(pipeline: Any, prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import openai
    import uvicorn

    from taskfit.serve.app import create_app
    from taskfit.serve.server import uvicorn_config

    app = create_app(pipeline)
    server = uvicorn.Server(uvicorn_config(app, pipeline.config, "127.0.0.1", 0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    answers: list[str | None] = [None] * len(prompts)
    latencies: list[float] = []
    errors: list[str] = []

    async def one_client(client: openai.AsyncOpenAI, c: int) -> None:
        for k in range(args.requests):
            i = c * args.requests + k
            t0 = time.perf_counter()
            try:
                res = await client.chat.completions.create(
                    model=pipeline.model_name, messages=[{"role": "user", "content": prompts[i]}])
            except openai.OpenAIError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            answers[i] = res.choices[0].message.content

    async def load() -> float:
        async with openai.AsyncOpenAI(base_url=url, api_key="local", max_retries=0, timeout=args.timeout_s) as client:
            # warm-up outside the timing: first-call costs (thread start, allocator) are not load
            await client.chat.completions.create(model=pipeline.model_name,
                                                 messages=[{"role": "user", "content": prompts[0]}])
            pipeline.backend.batches.clear()
            t0 = time.perf_counter()
            tasks = [asyncio.ensure_future(one_client(client, c)) for c in range(args.clients)]
            _, pending = await asyncio.wait(tasks, timeout=args.timeout_s)
            for t in pending:
                t.cancel()
            return time.perf_counter() - t0

    wall = asyncio.run(load())
    server.should_exit = True
    thread.join(timeout=30)
    ok = len(latencies)
    lat = sorted(latencies)
    batches = pipeline.backend.batches
    return {"ok": ok, "errors": len(errors), "lost": len(prompts) - ok - len(errors), "wall_s": wall,
            "rps": ok / wall, "p50_ms": statistics.median(lat) if lat else float("nan"),
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "mean_batch": sum(batches) / len(batches) if batches else 0.0, "answers": answers,
            "error_samples": errors[:3]}


if __name__ == "__main__":
    main()
