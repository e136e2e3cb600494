"""Scoring Banking77's 77 intent names after kNN few-shot prompts: a label trie vs one row per label.

Both scorers of the in-process backend run in one process on the bundled model (SmolLM2-135M-Instruct, fp32
on CPU): ``_score_rows`` (each label a row after the prompt's cached KV, in passes bounded by rows x prompt
tokens) and ``_score_continuations`` (the labels' token trie in one sequence with a tree attention mask on
top of the prompt's KV cache). The prompts are those of the example task's ``few_shot`` strategy with
``k: 8, selection: knn`` (examples/banking77: demonstrations from its 770 train rows by MiniLM similarity).
The prompt's KV cache is cleared before every call, so each one pays for its prompt pass once, as a new
query does. Prints, per query, the prompt's length, each scorer's CPU time (time.process_time, all threads)
and wall time, their ratio and the largest |log-likelihood difference|; then the totals.

    .venv/bin/python benchmarks/label_scoring.py --queries 3 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def knn_prompts(n: int, k: int = 8):
    """The first ``n`` test rows of examples/banking77 as its kNN few-shot strategy renders them, and the
    label continuations that scoring appends to them."""
    from taskfit.answering import label_continuations
    from taskfit.dataset import load_dataset
    from taskfit.prompts import prompt_parts
    from taskfit.strategies import StrategyContext
    from taskfit.strategies.few_shot import FewShot, FewShotOptions
    from taskfit.taskfile import load_task

    task = load_task(ROOT / "examples/banking77/task.yaml")
    data = load_dataset(task)
    parts = prompt_parts(task)
    ctx = StrategyContext(task=task, parts=parts, train=data.split("train"), mode="score")
    few_shot = FewShot(FewShotOptions(k=k, selection="knn"), ctx)
    queries = data.split("test")[:n]
    demos = few_shot.demos_for(queries)
    conts = tuple(c for _, c in label_continuations(task.config, parts.response_prefix))
    return [few_shot.prompt(q, d) for q, d in zip(queries, demos, strict=True)], conts


def timed(fn, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=3, help="test rows to score")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from taskfit.backends.hf import create
    from taskfit.taskfile import ModelSpec

    prompts, labels = knn_prompts(args.queries)
    backend = create(ModelSpec(device="cpu"))
    conts = [backend.tokenizer(c, add_special_tokens=False)["input_ids"] for c in labels]
    print(f"{len(conts)} labels, {sum(map(len, conts))} label tokens; torch threads {torch.get_num_threads()}")
    print(f"{'query':>5} {'prompt':>6} {'rows cpu s':>10} {'trie cpu s':>10} {'ratio':>6} {'rows wall s':>11} "
          f"{'trie wall s':>11} {'ratio':>6} {'max |diff|':>10}")
    totals = [0.0, 0.0, 0.0, 0.0]
    worst = 0.0
    with torch.inference_mode():
        for q, messages in enumerate(prompts):
            prompt = backend._encode(backend.prompt_text(messages))
            backend._prefix_cache.clear()
            rows, rows_cpu, rows_wall = timed(backend._score_rows, 0, prompt, conts)
            backend._prefix_cache.clear()
            trie, trie_cpu, trie_wall = timed(backend._score_continuations, 0, prompt, conts)
            diff = max(abs(a - b) for a, b in zip(rows.logprobs, trie.logprobs, strict=True))
            worst = max(worst, diff)
            for i, v in enumerate((rows_cpu, trie_cpu, rows_wall, trie_wall)):
                totals[i] += v
            print(f"{q:>5} {len(prompt):>6} {rows_cpu:>10.2f} {trie_cpu:>10.2f} {rows_cpu / trie_cpu:>6.1f} "
                  f"{rows_wall:>11.2f} {trie_wall:>11.2f} {rows_wall / trie_wall:>6.1f} {diff:>10.2e}")
    print(f"{'all':>5} {'':>6} {totals[0]:>10.2f} {totals[1]:>10.2f} {totals[0] / totals[1]:>6.1f} "
          f"{totals[2]:>11.2f} {totals[3]:>11.2f} {totals[2] / totals[3]:>6.1f} {worst:>10.2e}")


if __name__ == "__main__":
    main()
