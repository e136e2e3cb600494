"""Scoring Banking77's 77 intent names after kNN few-shot prompts: a label trie vs one row per label.

Both scorers of the in-process backend run in one process on the bundled model (SmolLM2-135M-Instruct, fp32
on CPU): ``_score_rows`` (each label a row after the prompt's cached KV, in passes bounded by rows x prompt
tokens) and ``_score_continuations`` (the labels' token trie in one sequence with a tree attention mask on
top of the prompt's KV cache). The prompts are those of the example task's ``few_shot`` strategy with
``k: 8, selection: knn`` (examples/banking77: demonstrations from its 770 train rows by MiniLM similarity).
Both scorers compute the prompt's KV cache once per query and reuse it for every label; that pass is timed
on its own, then each scorer's labels on top of it. Prints, per query, the prompt's length, the CPU time
(time.process_time, all threads) and wall time of the prompt pass and of each scorer's labels, the ratios
(rows / trie) for the labels alone and for the whole query (prompt pass + labels), and the largest
|log-likelihood difference| between the two scorers; then the totals.

    .venv/bin/python benchmarks/label_scoring.py --queries 3 --k 8 --threads 1
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
    ap.add_argument("--k", type=int, default=8, help="demonstrations per prompt (8: about 400 tokens)")
    # one thread by default: on a shared machine a second one mostly waits for the first at every small op
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from taskfit.backends.hf import create
    from taskfit.taskfile import ModelSpec

    prompts, labels = knn_prompts(args.queries, args.k)
    backend = create(ModelSpec(device="cpu"))
    conts = [backend.tokenizer(c, add_special_tokens=False)["input_ids"] for c in labels]
    print(f"{len(conts)} labels, {sum(map(len, conts))} label tokens; torch threads {torch.get_num_threads()}")
    print("per query: the prompt's pass (its KV cache, which both scorers compute once), then each scorer's "
          "labels on top of it; CPU s (wall s); ratios rows/trie for the labels alone and for the whole query")
    print(f"{'query':>5} {'tokens':>6} {'prompt':>13} {'rows labels':>13} {'trie labels':>13} {'labels x':>13} "
          f"{'query x':>11} {'max |diff|':>10}")
    totals = [0.0] * 6  # cpu, wall for: prompt, rows, trie
    worst = 0.0
    with torch.inference_mode():
        for q, messages in enumerate(prompts):
            prompt = backend._encode(backend.prompt_text(messages))
            backend._prefix_cache.clear()
            _, *prompt_t = timed(backend._shared_prefix, tuple(prompt[:-1]), 1)
            rows, *rows_t = timed(backend._score_rows, 0, prompt, conts)
            trie, *trie_t = timed(backend._score_continuations, 0, prompt, conts)
            diff = max(abs(a - b) for a, b in zip(rows.logprobs, trie.logprobs, strict=True))
            worst = max(worst, diff)
            for i, v in enumerate(prompt_t + rows_t + trie_t):
                totals[i] += v
            report(str(q), str(len(prompt)), prompt_t + rows_t + trie_t, diff)
    report("all", "", totals, worst)


def report(name: str, tokens: str, t: list[float], diff: float) -> None:
    """One row: t is (cpu, wall) of the prompt pass, the row scorer's labels and the trie's labels."""
    def pair(cpu: float, wall: float, fmt: str = ".2f") -> str:
        return f"{cpu:{fmt}} ({wall:{fmt}})"

    labels = pair(t[2] / t[4], t[3] / t[5], ".1f")
    query = pair((t[0] + t[2]) / (t[0] + t[4]), (t[1] + t[3]) / (t[1] + t[5]), ".1f")
    print(f"{name:>5} {tokens:>6} {pair(t[0], t[1]):>13} {pair(t[2], t[3]):>13} {pair(t[4], t[5]):>13} "
          f"{labels:>13} {query:>11} {diff:>10.2e}")


if __name__ == "__main__":
    main()
