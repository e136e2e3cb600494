"""The real bundled models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) on CPU: a small, slower tier."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskfit.backends import GenerateRequest, ScoreRequest
from taskfit.dataset import Example

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smollm():
    from taskfit.backends.hf import create
    from taskfit.taskfile import ModelSpec

    return create(ModelSpec(batch_size=4))


def test_answers_a_factual_question(smollm):
    (res,) = smollm.generate([GenerateRequest(({"role": "user", "content": "What is the capital of England?"},),
                                              max_tokens=16, stop=("\n",))])
    assert "London" in res.texts[0]
    assert res.tokens_in > 10 and 0 < res.tokens_out <= 16 and res.error is None


def test_shared_prefix_cache_gives_the_same_scores(smollm):
    from taskfit.backends import hf

    system = "You label movie reviews. Reply with one word, positive or negative. " * 3
    reqs = [ScoreRequest(({"role": "system", "content": system}, {"role": "user", "content": t}),
                         ("positive", "negative", "very positive"))
            for t in ["a wonderful film", "dull and far too long", "i laughed a lot", "a waste of time"]]
    with_cache = [r.logprobs for r in smollm.score(reqs)]
    old = hf.MIN_SHARED_PREFIX
    hf.MIN_SHARED_PREFIX = 10**9  # disable the prefix cache
    try:
        without = [r.logprobs for r in smollm.score(reqs)]
    finally:
        hf.MIN_SHARED_PREFIX = old
    for a, b in zip(with_cache, without, strict=True):
        assert a == pytest.approx(b, abs=1e-3)
    # batching must not change a score either
    alone = smollm.score(reqs[:1])[0].logprobs
    assert alone == pytest.approx(with_cache[0], abs=1e-3)


def test_sampling_returns_n_samples(smollm):
    (res,) = smollm.generate([GenerateRequest(({"role": "user", "content": "Name a colour."},), max_tokens=8,
                                              temperature=0.9, n=3, seed=1)])
    assert len(res.texts) == 3


def test_knn_selection_uses_meaning():
    from taskfit.selection import knn

    pool = [Example(id=str(i), fields={}, target="", answers=()) for i in range(3)]
    texts = {"0": "I hated the food at that restaurant", "1": "a delightful, charming film", "2": "stock markets fell"}
    query = Example(id="q", fields={}, target="", answers=())
    (demos,) = knn(pool, [query], k=2, seed=0,
                   text=lambda e: "what a delightful movie" if e.id == "q" else texts[e.id])
    assert demos[-1].id == "1"  # the nearest demo sits next to the query


def test_default_study_eval_on_bundled_model(tmp_path):
    env = {**os.environ, "TASKFIT_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", str(ROOT / "examples/sst2/task.yaml"),
                          "--limit", "24", "--json"], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) >= 3
    for r in rows:
        assert r["n"] == 24 and r["ci_low"] <= r["score"] <= r["ci_high"] and r["parse_fail_rate"] == 0
    assert max(r["score"] for r in rows) >= 0.6  # well above the 50% of a coin flip (measured ~0.8 on 200 rows)


def test_generative_example_on_bundled_model(tmp_path):
    env = {**os.environ, "TASKFIT_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", str(ROOT / "examples/squad/task.yaml"),
                          "--strategy", "zero_shot", "--limit", "6", "--json"], capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["n"] == 6 and row["tokens_out"] > 0 and row["metric"] == "token_f1"


def test_chat_template_and_prefill(smollm):
    text = smollm.prompt_text(({"role": "user", "content": "Review: fine"}, {"role": "assistant", "content": "Sentiment:"}))
    assert text.endswith("<|im_start|>user\nReview: fine<|im_end|>\n<|im_start|>assistant\nSentiment:")
    assert text.startswith("<|im_start|>system\n")  # the model's default system prompt when none is given


def test_local_folder_and_gguf_paths_load_the_same_model(smollm):
    from taskfit import bundled
    from taskfit.backends.hf import create
    from taskfit.taskfile import ModelSpec

    from_folder = create(ModelSpec(path=str(bundled.smollm2_dir())))
    from_gguf = create(ModelSpec(path=str(bundled.smollm2_gguf())))
    assert from_folder.model_id.split(":")[2:] == from_gguf.model_id.split(":")[2:] == smollm.model_id.split(":")[2:]
    req = [ScoreRequest(({"role": "user", "content": "Is 2 bigger than 1?"},), ("Yes", "No"))]
    assert from_gguf.score(req)[0].logprobs == pytest.approx(smollm.score(req)[0].logprobs, abs=1e-4)


def test_banking77_labels_score_the_same_through_the_trie_and_one_row_each(smollm, monkeypatch):
    """Few-shot Banking77 prompts (4 random demonstrations from examples/banking77) and its 77 intent names:
    the label trie with a tree attention mask gives each row's log-likelihoods."""
    from taskfit.answering import label_continuations
    from taskfit.backends.hf import HFBackend
    from taskfit.dataset import load_dataset
    from taskfit.prompts import prompt_parts
    from taskfit.strategies import StrategyContext
    from taskfit.strategies.few_shot import FewShot, FewShotOptions
    from taskfit.taskfile import load_task

    task = load_task(ROOT / "examples/banking77/task.yaml")
    data = load_dataset(task)
    parts = prompt_parts(task)
    few_shot = FewShot(FewShotOptions(k=4, selection="random"),
                       StrategyContext(task=task, parts=parts, train=data.split("train"), mode="score"))
    queries = data.split("test")[:2]
    conts = tuple(c for _, c in label_continuations(task.config, parts.response_prefix))
    reqs = [ScoreRequest(few_shot.prompt(q, d), conts) for q, d in zip(queries, few_shot.demos_for(queries), strict=True)]
    trie = smollm.score(reqs)
    monkeypatch.setattr(HFBackend, "_scores_trees", lambda self, length: False)
    rows = smollm.score(reqs)
    for a, b in zip(trie, rows, strict=True):
        assert a.tokens_in > 200 and a.token_counts == b.token_counts
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
