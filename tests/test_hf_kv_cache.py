"""The local backend passes its shared-prefix KV cache under the name the model takes, so transformers prints
no deprecation warning to the user (a tiny Llama built in code)."""

import warnings
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaModel

from taskfit.backends.hf import kv_cache_arg


def tiny_llama() -> LlamaModel:
    torch.manual_seed(0)
    return LlamaModel(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()


def test_a_cached_prefix_then_a_continuation_warns_nothing_and_matches_one_pass():
    model = tiny_llama()
    ids = torch.tensor([[1, 5, 7, 9, 11, 13]])
    name = kv_cache_arg(model)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        prefix = model(input_ids=ids[:, :4], use_cache=True)
        rest = model(input_ids=ids[:, 4:], use_cache=True, **{name: prefix[name]})
        whole = model(input_ids=ids)
    assert [str(w.message) for w in caught] == []
    assert torch.allclose(rest.last_hidden_state, whole.last_hidden_state[:, 4:], atol=1e-5)


def test_many_labels_after_a_long_prompt_are_scored_in_row_passes_of_bounded_size():
    """Each pass copies the shared prompt's keys and values once per row: rows x prompt tokens stay bounded."""
    from types import SimpleNamespace

    from taskfit.backends.hf import SCORE_PASS_TOKENS, HFBackend

    passes = []

    def target_logprobs(rows, targets):
        passes.append(len(rows))
        return [[-1.0] * len(t) for t in targets]

    fake = SimpleNamespace(options=SimpleNamespace(batch_size=8), _target_logprobs=target_logprobs)
    labels = [[7, 8, k] for k in range(77)]
    for prompt_len, most in ((100, 64), (900, SCORE_PASS_TOKENS // 900), (40_000, 1)):
        passes.clear()
        res = HFBackend._score_rows(fake, 0, list(range(prompt_len)), labels)
        assert res.logprobs == [-3.0] * 77 and sum(passes) == 77
        assert max(passes) == most


def _word_tokenizer(words: list[str]):
    """A word-level tokenizer built in code (no files, no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def test_the_backend_scores_and_generates_without_cache_deprecation_warnings():
    """Every path of the local backend that hands a model its KV cache (the shared-prefix score, the batched
    single-token score, generation) passes it under the name the installed transformers takes."""
    from transformers import LlamaForCausalLM

    from taskfit.backends import GenerateRequest, ScoreRequest
    from taskfit.backends.hf import MIN_SHARED_PREFIX, HFBackend
    from taskfit.taskfile import ModelSpec

    words = "review a great film dull mess positive negative very good bad the plot".split()
    tokenizer = _word_tokenizer(words)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words) + 3, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=128, pad_token_id=1, eos_token_id=2))
    spec = ModelSpec(backend="hf", path="in-memory", chat_template=False)
    backend = HFBackend(Path("in-memory"), spec, model=model, tokenizer=tokenizer, model_id="tiny")
    long = " ".join(["the plot"] * MIN_SHARED_PREFIX)  # long enough for the shared-prefix KV cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shared = backend.score([ScoreRequest(({"role": "user", "content": long},), ("very good", "very bad"))])
        single = backend.score([ScoreRequest(({"role": "user", "content": f"review {w}"},), ("positive", "negative"))
                                for w in ("great", "dull")])
        generated = backend.generate([GenerateRequest(({"role": "user", "content": "a great film"},), max_tokens=4)])
    cache_warnings = [str(w.message) for w in caught if "past_key_values" in str(w.message)
                      or issubclass(w.category, FutureWarning)]
    assert cache_warnings == []
    assert len(shared[0].logprobs) == 2 and len(single) == 2 and generated[0].tokens_out > 0
