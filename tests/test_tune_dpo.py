"""Preference tuning (objective dpo): TRL's DPOTrainer on a LoRA adapter of a tiny model built in code."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("trl")

import test_tuning  # noqa: E402

from taskfit.tuning.dpo import Pair, loglik_margin, self_generated, train_dpo  # noqa: E402

tiny_models = test_tuning.tiny_models  # the 2-layer Llama with SmolLM2's tokenizer

WORDS = "apple river stone cloud paper music garden window bridge candle silver forest ocean pencil mirror tiger"


def _cue_pairs(words: list[str]) -> list[Pair]:
    """The preferred reply depends on the cue word only: ``up`` -> yes, ``down`` -> no."""
    return [Pair(f"{w} {cue} ->", " yes" if cue == "up" else " no", " no" if cue == "up" else " yes")
            for w in words for cue in ("up", "down")]


def test_chosen_rejected_margin_grows_on_held_out_pairs(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from taskfit.tuning.methods import method
    from taskfit.tuning.spec import TuneSpec

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    lora = method("lora")
    options = lora.options(TuneSpec(target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]))
    model = lora.apply(model, options, "CAUSAL_LM")
    words = WORDS.split()
    train, held_out = _cue_pairs(words[:12]), _cue_pairs(words[12:])
    before = loglik_margin(model, tok, held_out)
    res = train_dpo(model, tok, train, output_dir=tmp_path / "out", lr=5e-3, beta=0.1, loss_type="sigmoid",
                    batch_size=8, epochs=10, max_steps=None, max_length=64, seed=0)
    after = loglik_margin(model, tok, held_out)
    assert res.steps == 30 and len(res.curve) == 30
    assert after > before + 0.3, (before, after)
    # the reference is the adapter switched off: the base model's margin is unchanged
    with model.disable_adapter():
        assert loglik_margin(model, tok, held_out) == pytest.approx(before, abs=1e-3)


def test_self_generated_pairs_keep_best_against_worst():
    from taskfit.backends import GenerateResult
    from taskfit.dataset import Example

    class Sampler:
        def generate(self, reqs):
            replies = {"a": ["positive", "negative", "negative"], "b": ["negative", "negative"], "c": ["x"]}
            return [GenerateResult(texts=replies[r.messages[0]["content"]]) for r in reqs]

    exs = [Example(id=i, fields={"text": i}, target="positive") for i in ("a", "b", "c")]
    pairs = self_generated(exs, lambda ex: ({"role": "user", "content": ex.id},), Sampler(),
                           lambda pred, ex: float(pred == ex.target), lambda t: t, k=3, seed=0,
                           prompt_text=lambda m: m[0]["content"] + " ->", lead=" ")
    # b: every sample scored alike, c: a single sample: no pair
    assert pairs == [Pair("a ->", " positive", " negative")]


@pytest.fixture
def reviewed(make_task, workspace):
    """Two scripted runs of the sentiment task with pairwise choices where their answers differ."""
    from taskfit.review import add_choice, preference_pairs
    from taskfit.study import run_study

    task = make_task()
    _, table = run_study(task, workspace=workspace)
    store = workspace.runs
    zs, fs = (store.get(r.run_id) for r in sorted(table, key=lambda r: r.strategy != "zero_shot"))
    a = {p.example_id: p for p in store.predictions(zs.id, with_trace=False)}
    b = {p.example_id: p for p in store.predictions(fs.id, with_trace=False)}
    for ex_id in a:
        if a[ex_id].answer != b[ex_id].answer:
            add_choice(store, zs, fs, ex_id, "a" if a[ex_id].score >= b[ex_id].score else "b")
    pairs = preference_pairs(store, zs.task_name)
    assert pairs
    return task, pairs


def test_review_choices_and_their_exported_jsonl_both_train(reviewed, workspace, tiny_models, tmp_path):
    """Source (a): the review app's choices in the workspace; source (b): the same pairs exported as JSONL.
    Both train an adapter that is stored and scored like every tuned model."""
    from taskfit.review import write_jsonl
    from taskfit.study import prepare, run_study
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune

    task_path, pairs = reviewed
    task, ds = prepare(task_path)
    base = dict(objective="dpo", model=str(tiny_models["llama"]), max_steps=2, batch_size=2, forgetting=False)
    rec = tune(task, ds.split("train"), TuneSpec(**base, preferences="review"), store=workspace.tunes,
               runs=workspace.runs)
    assert rec.status == "done" and rec.objective == "dpo"
    assert rec.result["pairs_source"] == "review" and rec.result["pairs"] == len(pairs)
    assert rec.result["steps_done"] == 2 and rec.result["trainable_params"] > 0
    assert (rec.folder / "adapter" / "adapter_model.safetensors").is_file()

    exported = tmp_path / "prefs.jsonl"
    write_jsonl(pairs, exported)
    rec2 = tune(task, ds.split("train"), TuneSpec(**base, preferences=str(exported)), store=workspace.tunes)
    assert rec2.status == "done" and rec2.result["pairs"] == len(pairs)
    assert rec2.result["pairs_source"] == str(exported)
    assert json.loads((rec2.folder / "tune.json").read_text())["trained_with"] == "dpo"

    _, table = run_study(task_path, workspace=workspace, strategy_names=["zero_shot"],
                         model_names=[f"tuned:{rec2.id}"])
    (row,) = table
    assert row.n == 8 and row.tune["method"] == "lora" and row.tune["train_time_s"] > 0


def test_review_source_without_choices_is_a_clear_error(make_task, workspace, tiny_models):
    from taskfit.errors import TaskfitError
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune

    task, ds = prepare(make_task())
    spec = TuneSpec(objective="dpo", model=str(tiny_models["llama"]), preferences="review", forgetting=False)
    with pytest.raises(TaskfitError, match="no preference pairs for task 'tiny'"):
        tune(task, ds.split("train"), spec, store=workspace.tunes, runs=workspace.runs)
