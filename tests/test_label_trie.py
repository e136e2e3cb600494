"""Label scoring over a token trie with a tree attention mask gives the log-likelihoods of one row per label
(the row scorer, ``HFBackend._score_rows``), on a tiny random Llama built in code with SmolLM2's tokenizer."""

import json
from pathlib import Path

import pytest
import torch

from taskfit.backends import ScoreRequest, label_trie

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT / "examples/banking77"


def banking77_labels() -> list[str]:
    import yaml

    return yaml.safe_load((BANKING77 / "task.yaml").read_text())["labels"]


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer Llama (4 heads, 2 kv heads) with random weights, behind the in-process backend."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from taskfit import bundled
    from taskfit.backends.hf import HFBackend
    from taskfit.taskfile import ModelSpec

    tok = AutoTokenizer.from_pretrained(bundled.smollm2_dir())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True, initializer_range=0.5,
                                         pad_token_id=tok.pad_token_id or 0))
    return HFBackend(Path("."), ModelSpec(backend="hf", device="cpu"), model=model, tokenizer=tok, model_id="tiny")


def test_the_trie_shares_leading_tokens_and_puts_parents_first():
    trie = label_trie.build([[5, 6, 7], [5, 6, 8], [5, 9], [5, 6, 7], [4]])
    assert trie.tokens == [5, 6, 7, 8, 9, 4] and trie.parents == [-1, 0, 1, 1, 0, -1]
    assert trie.depths == [1, 2, 3, 3, 2, 1] and trie.ends == [2, 3, 4, 2, 5] and trie.inner == [0, 1]


def test_passes_cover_every_inner_node_once_and_stay_under_the_bound():
    for n_inner, prompt_len, stem, most in ((200, 900, 1, 1 << 22), (200, 900, 1, 5000), (50, 40, 40, 900)):
        passes = label_trie.passes(n_inner, prompt_len, stem, most)
        assert [i for a, b in passes for i in range(a, b)] == list(range(n_inner))
        for k, (a, b) in enumerate(passes):
            queries = (b - a) + (stem if k == 0 else 0)
            assert queries * (prompt_len + n_inner) <= max(most, stem * (prompt_len + n_inner))


def test_a_node_attends_to_the_prompt_and_its_own_ancestors_only():
    trie = label_trie.build([[5, 6, 7], [5, 6, 8], [5, 9, 3]])  # inner nodes: 5, 6, 9
    allowed = label_trie.tree_mask(trie, range(0, 3), 4, 2, torch.float32)[0, 0] == 0
    assert allowed.tolist() == [
        [1, 1, 1, 0, 0, 0, 0],  # the prompt's third token (the stem starts after 2 cached ones)
        [1, 1, 1, 1, 0, 0, 0],  # its last token
        [1, 1, 1, 1, 1, 0, 0],  # 5
        [1, 1, 1, 1, 1, 1, 0],  # 5 6
        [1, 1, 1, 1, 1, 0, 1],  # 5 9, not 6
    ]


def test_trie_scores_equal_one_row_per_label(tiny, monkeypatch):
    """Banking77's 77 intents after prompts long enough for the prompt cache and too short for it, in one
    pass and in many small ones (the cache then grows by each pass's nodes)."""
    from taskfit.backends import hf

    labels = [" " + lab for lab in banking77_labels()]
    conts = [tiny.tokenizer(c, add_special_tokens=False)["input_ids"] for c in labels]
    texts = ["Message: I still have not received my new card, I ordered over a week ago.\nIntent:",
             "Message: Why was I charged a fee for my card payment? " * 6 + "\nIntent:", "Intent:"]
    prompts = [tiny.tokenizer(t)["input_ids"] for t in texts]
    assert len(prompts[1]) > 2 * hf.MIN_SHARED_PREFIX and len(prompts[2]) < hf.MIN_SHARED_PREFIX
    for cells in (hf.SCORE_PASS_CELLS, 2000):
        monkeypatch.setattr(hf, "SCORE_PASS_CELLS", cells)
        for prompt in prompts:
            with torch.inference_mode():
                trie = tiny._score_continuations(0, prompt, conts)
                rows = tiny._score_rows(0, prompt, conts)
            assert trie.token_counts == rows.token_counts and trie.tokens_in == rows.tokens_in
            assert max(abs(a - b) for a, b in zip(trie.logprobs, rows.logprobs, strict=True)) < 1e-4
            assert len(set(rows.logprobs)) > 70  # the labels are told apart


def test_score_requests_go_through_the_trie(tiny, monkeypatch):
    from taskfit.backends.hf import HFBackend

    calls = []
    real = HFBackend._trie_logprobs
    monkeypatch.setattr(HFBackend, "_trie_logprobs", lambda self, *a: calls.append(1) or real(self, *a))
    reqs = [ScoreRequest(({"role": "user", "content": json.dumps(i)},), ("card_arrival", "card_linking", "top_up"))
            for i in range(2)]
    res = tiny.score(reqs)
    assert len(calls) == 2 and all(len(r.logprobs) == 3 for r in res)
