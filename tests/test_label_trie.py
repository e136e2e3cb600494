"""Label scoring over a token trie with a tree attention mask gives the log-likelihoods of one row per label
(the row scorer, ``HFBackend._score_rows``), on a tiny random Llama built in code."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from taskfit.backends import label_trie

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT / "examples/banking77"


def banking77_labels() -> list[str]:
    import yaml

    return yaml.safe_load((BANKING77 / "task.yaml").read_text())["labels"]


def word_ids(texts: list[str], vocab: dict[str, int]) -> list[list[int]]:
    """Each text as word and underscore ids: intents that share leading words share leading tokens."""
    return [[vocab.setdefault(w, len(vocab)) for w in re.findall(r"[A-Za-z?]+|_|\S", t)] for t in texts]


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer Llama (4 heads, 2 kv heads) with random weights and a small vocabulary, behind the
    in-process backend; token ids are given to it directly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from taskfit.backends.hf import HFBackend
    from taskfit.taskfile import ModelSpec

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5))
    tokenizer = SimpleNamespace(pad_token_id=0, chat_template=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's many small ops cost more in thread hand-offs than they compute
    yield HFBackend(Path("."), ModelSpec(backend="hf", device="cpu"), model=model, tokenizer=tokenizer,
                    model_id="tiny")
    torch.set_num_threads(threads)


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

    vocab = {"<pad>": 0}
    conts = word_ids([" " + lab for lab in banking77_labels()], vocab)
    texts = ["Message : I still have not received my new card , I ordered over a week ago . Intent :",
             "Message : Why was I charged a fee for my card payment ? " * 4 + "Intent :", "Intent :"]
    prompts = word_ids(texts, vocab)
    assert len(prompts[2]) < hf.MIN_SHARED_PREFIX < len(prompts[0]) and len(vocab) < 512
    inner = len(label_trie.build(conts).inner)
    assert inner < sum(len(c) - 1 for c in conts)  # shared leading words run once, not once per label
    positions: list[int] = []
    hook = tiny.model.get_decoder().register_forward_pre_hook(
        lambda _m, _a, kw: positions.append(kw["input_ids"].shape[1]), with_kwargs=True)
    for cells in (hf.SCORE_PASS_CELLS, 2000):
        monkeypatch.setattr(hf, "SCORE_PASS_CELLS", cells)
        for prompt in prompts:
            tiny._prefix_cache.clear()
            positions.clear()
            with torch.inference_mode():
                trie = tiny._score_continuations(0, prompt, conts)
                assert sum(positions) == len(prompt) + inner  # the prompt once, each shared prefix once
                assert (len(positions) > 3) == (cells == 2000)  # bounded passes; else the prompt, then one
                rows = tiny._score_rows(0, prompt, conts)
            assert trie.token_counts == rows.token_counts and trie.tokens_in == rows.tokens_in
            assert max(abs(a - b) for a, b in zip(trie.logprobs, rows.logprobs, strict=True)) < 1e-4
            assert len(set(rows.logprobs)) == 77  # the labels are told apart
    # a prompt a few tokens longer than a cached one runs only those tokens before its labels
    longer = prompts[1] + prompts[0][:5]
    with torch.inference_mode():
        tiny._score_continuations(0, prompts[1], conts)
        positions.clear()
        trie = tiny._score_continuations(0, longer, conts)
        assert sum(positions) == 6 + inner
        rows = tiny._score_rows(0, longer, conts)
    assert max(abs(a - b) for a, b in zip(trie.logprobs, rows.logprobs, strict=True)) < 1e-4
    hook.remove()
