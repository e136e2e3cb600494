"""GGUF export: a tiny Llama built in code written as GGUF, loaded back by transformers and the hf backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

import test_tuning  # noqa: E402

tiny_models = test_tuning.tiny_models  # the 2-layer Llama (4 heads, 2 kv heads) with SmolLM2's tokenizer
tune_task = test_tuning.tune_task

# max |logit difference| against the source (logits up to 0.8); measured: f32 0, f16 2.0e-4, q8_0 4.6e-3
TOLERANCE = {"f32": 1e-6, "f16": 2e-3, "q8_0": 2e-2}


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    from taskfit import bundled
    from taskfit.gguf_export import export

    root = tmp_path_factory.mktemp("gguf")
    return {p: export(tiny_models["llama"], root / p / "model.gguf", source=bundled.smollm2_gguf(), precision=p)
            for p in TOLERANCE}


def _logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_transformers_loads_the_export_with_the_sources_logits(tiny_models, exported, precision):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = exported[precision]
    src = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    ids = tok("Review: a great and moving film. Sentiment: positive")["input_ids"]
    want, got = _logits(src, ids), _logits(back, ids)
    assert want.abs().max() > 0.05  # a model whose logits are all near zero would pass any tolerance
    assert (got - want).abs().max().item() < TOLERANCE[precision]
    if precision != "f32":
        assert not torch.equal(got, want)  # a lossy precision really was written


def test_the_tokenizer_and_chat_template_come_back(tiny_models, exported):
    from transformers import AutoTokenizer

    path = exported["f16"]
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    gtok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "Review: a great and moving film. Sentiment: positive <|im_end|>"
    assert gtok(text)["input_ids"] == tok(text)["input_ids"]
    assert gtok.chat_template == tok.chat_template


@pytest.mark.slow  # tens of seconds of conversion: the slow tier
def test_an_untied_output_head_is_written_as_output_weight(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taskfit import bundled
    from taskfit.gguf_export import export

    torch.manual_seed(1)
    src = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32, tie_word_embeddings=False)
    torch.nn.init.normal_(src.lm_head.weight, std=0.5)  # a head unlike the embeddings
    src.save_pretrained(tmp_path / "untied")
    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(tmp_path / "untied")
    path = export(tmp_path / "untied", tmp_path / "out" / "model.gguf", source=bundled.smollm2_gguf(), precision="f32")
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert not back.config.tie_word_embeddings
    ids = [1, 2, 3, 400, 5000]
    assert torch.allclose(_logits(back, ids), _logits(src.eval(), ids), atol=1e-6)


def test_query_and_key_rows_are_in_llama_cpps_layout(tiny_models, exported):
    """Without the forward permutation the file still loads, but attention is wrong: compare the stored rows."""
    import gguf
    from safetensors.torch import load_file

    from taskfit.gguf_export import permute_rotary

    state = load_file(tiny_models["llama"] / "model.safetensors")
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(exported["f32"]).tensors}
    q = state["model.layers.0.self_attn.q_proj.weight"].numpy()
    k = state["model.layers.0.self_attn.k_proj.weight"].numpy()
    assert np.array_equal(stored["blk.0.attn_q.weight"], permute_rotary(q, 4))
    assert np.array_equal(stored["blk.0.attn_k.weight"], permute_rotary(k, 2))
    assert not np.array_equal(stored["blk.0.attn_k.weight"], k)
    assert "output.weight" not in stored  # tied head: llama.cpp reuses token_embd
    assert np.array_equal(stored["blk.1.ffn_down.weight"], state["model.layers.1.mlp.down_proj.weight"].numpy())


def test_metadata_is_the_models_shape_with_the_sources_tokenizer(exported):
    import gguf

    from taskfit import bundled

    fields = gguf.GGUFReader(exported["q8_0"]).fields
    src = gguf.GGUFReader(bundled.smollm2_gguf()).fields
    assert fields["llama.block_count"].contents() == 2 and fields["llama.embedding_length"].contents() == 32
    assert fields["llama.attention.head_count_kv"].contents() == 2
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert set(fields) == set(src)  # every key llama.cpp reads from the source, none it does not know
    for key in ("tokenizer.ggml.pre", "tokenizer.ggml.merges", "tokenizer.chat_template",
                "tokenizer.ggml.eos_token_id"):
        assert fields[key].contents() == src[key].contents()


@pytest.mark.slow  # tens of seconds of conversion: the slow tier
def test_the_hf_backend_scores_the_gguf_like_its_source(tiny_models, exported, tmp_path, monkeypatch):
    from taskfit.backends import ScoreRequest
    from taskfit.backends.hf import HFBackend, create
    from taskfit.taskfile import ModelSpec

    monkeypatch.setenv("TASKFIT_MODEL_CACHE", str(tmp_path))  # the backend converts the GGUF once, here
    reqs = [ScoreRequest(({"role": "user", "content": f"Review: {t}"},), ("positive", "negative"))
            for t in ("a great film", "a dull mess", "fine")]
    want = [r.logprobs for r in HFBackend(tiny_models["llama"], ModelSpec(path=str(tiny_models["llama"])))
            .score(reqs)]
    got = [r.logprobs for r in create(ModelSpec(path=str(exported["f16"]))).score(reqs)]
    for w, g in zip(want, got, strict=True):
        assert g == pytest.approx(w, abs=1e-2)


def test_unsupported_inputs_are_clear_errors(tiny_models, tmp_path):
    from taskfit import bundled
    from taskfit.errors import TaskfitError
    from taskfit.gguf_export import export, source_gguf

    with pytest.raises(TaskfitError, match="f32, f16, q8_0"):
        export(tiny_models["llama"], tmp_path / "m.gguf", source=bundled.smollm2_gguf(), precision="q4_k")
    with pytest.raises(TaskfitError, match="Llama-architecture"):
        export(tiny_models["bert"], tmp_path / "m.gguf", source=bundled.smollm2_gguf())
    assert source_gguf(tiny_models["llama"]) is None
    assert source_gguf(bundled.smollm2_dir()) == bundled.smollm2_gguf()


@pytest.mark.slow  # tens of seconds of conversion: the slow tier
def test_shrink_command_exports_a_tuned_model_on_a_gguf_base(tune_task, exported, workspace, taskfit_home,
                                                              tmp_path, monkeypatch):
    """tiny f32 GGUF as the base -> LoRA (3 steps) -> `taskfit shrink tuned:ID --to gguf-f16` -> leaderboard."""
    import json

    from typer.testing import CliRunner

    from taskfit.cli import app

    monkeypatch.setenv("TASKFIT_MODEL_CACHE", str(tmp_path / "cache"))  # GGUF conversions, this test's own
    task_path = tune_task()
    rec, _, _ = test_tuning._tune(workspace, task_path, method="lora", model=str(exported["f32"]), max_steps=3,
                                  lr=1e-2)
    res = CliRunner().invoke(app, ["shrink", str(task_path), f"tuned:{rec.id}", "--to", "gguf-f16", "--limit", "4",
                                   "--queries", "2"])
    assert res.exit_code == 0, res.output
    [folder] = (taskfit_home / "shrunk").glob("*-gguf-f16")
    assert (folder / "model.gguf").is_file() and f"{folder.name}" in res.output  # scored on the leaderboard
    assert json.loads((folder / "shrink.json").read_text())["source"] == str(exported["f32"])


def test_a_model_not_converted_from_a_gguf_is_refused(tiny_models, tmp_path):
    from taskfit.errors import TaskfitError
    from taskfit.gguf_export import shrink_to_gguf

    with pytest.raises(TaskfitError, match="was not converted from a GGUF"):
        shrink_to_gguf(tiny_models["llama"], "gguf-f16", tmp_path / "x", base=tiny_models["llama"])


@pytest.mark.slow
def test_bundled_model_tuned_merged_and_exported_scores_like_its_source(workspace, tmp_path, monkeypatch):
    """SmolLM2-135M after 4 LoRA SFT steps, merged, exported to GGUF f16 and q8_0 and loaded back through the
    hf backend: on 32 SST-2 test rows the label predictions agree with the merged folder's."""
    from pathlib import Path

    from taskfit import bundled
    from taskfit.gguf_export import shrink_to_gguf, tuned_base
    from taskfit.runner import Arm, evaluate
    from taskfit.shrink import size_mb
    from taskfit.taskfile import ModelSpec
    from taskfit.tuning.adapters import merge
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import Job

    # the exported files' conversions go to this test's folder; the bundled model's is reused, not redone
    real = bundled.smollm2_dir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / real.name).symlink_to(real)
    monkeypatch.setenv("TASKFIT_MODEL_CACHE", str(tmp_path / "cache"))

    task_path = Path(__file__).resolve().parents[1] / "examples" / "sst2" / "task.yaml"
    rec, task, dataset = test_tuning._tune(workspace, task_path, method="lora", model="bundled", max_steps=4,
                                           batch_size=4, train_limit=16, lr=1e-3)
    merged = merge(rec.id, tmp_path / "merged", store=workspace.tunes)
    copies = {p: shrink_to_gguf(merged, f"gguf-{p}", tmp_path / p, base=tuned_base(workspace, rec.id))
              for p in ("f16", "q8_0")}
    row = Job.strategy_for(task, TuneSpec(**{**rec.spec, "objective": "sft"}))
    arms = [Arm(row, ModelSpec(backend="hf", path=str(f), name=n)) for n, f in {"merged": merged, **copies}.items()]
    runs = evaluate(task, dataset, arms, split="test", limit=32, workspace=workspace)
    preds = {r.model: workspace.runs.predictions(r.id) for r in runs}
    for p in copies:
        pairs = list(zip(preds["merged"], preds[p], strict=True))
        agree = sum(a.answer == b.answer for a, b in pairs) / len(pairs)
        diff = max(abs(a.trace["details"]["label_logprobs"][lab] - b.trace["details"]["label_logprobs"][lab])
                   for a, b in pairs for lab in task.config.labels)
        print(f"gguf-{p}: label agreement {agree:.3f} on {len(pairs)} rows, max |label loglik diff| {diff:.4f}, "
              f"{size_mb(copies[p]):.0f} MB vs merged {size_mb(merged):.0f} MB")
        assert agree >= 0.95
        assert diff < {"f16": 0.05, "q8_0": 0.25}[p]
        assert size_mb(copies[p]) < 0.6 * size_mb(merged)


@pytest.mark.slow  # converts a GGUF in a fresh command-line process
def test_the_command_line_converts_a_gguf_without_a_progress_bar(tune_task, exported, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TASKFIT_HOME": str(tmp_path / "home"), "TASKFIT_MODEL_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "taskfit", "eval", str(tune_task()), "--model",
                          str(exported["f32"]), "--limit", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "converting model.gguf to safetensors once" in res.stderr  # the conversion did run here
    assert "GGUF tensors" not in res.stderr and "it/s]" not in res.stderr, res.stderr
