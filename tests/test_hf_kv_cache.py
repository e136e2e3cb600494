"""The local backend passes its shared-prefix KV cache under the name the model takes, so transformers prints
no deprecation warning to the user (a tiny Llama built in code)."""

import warnings

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
