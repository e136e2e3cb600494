"""Preference tuning (objective dpo): TRL's DPOTrainer on a LoRA adapter of a tiny model built in code."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("trl")

import test_tuning  # noqa: E402

from taskfit.tuning.dpo import Pair, loglik_margin, self_generated, train_dpo  # noqa: E402

tiny_models = test_tuning.tiny_models  # the 2-layer Llama with SmolLM2's tokenizer
tune_task = test_tuning.tune_task

WORDS = "apple river stone cloud paper music garden window bridge candle silver forest ocean pencil mirror tiger"


def _cue_pairs(words: list[str]) -> list[Pair]:
    """The preferred reply depends on the cue word only: ``up`` -> yes, ``down`` -> no."""
    return [Pair(f"{w} {cue} ->", " yes" if cue == "up" else " no", " no" if cue == "up" else " yes")
            for w in words for cue in ("up", "down")]


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
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


# transformers renamed TRL's default `gradient_checkpointing` to `activation_checkpointing`: no warning per run
@pytest.mark.filterwarnings("error:`gradient_checkpointing` is deprecated:FutureWarning")
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


# -- the objective's own options ----------------------------------------------------------------------


def _task_with_tuning(tmp_path, rows: list[dict]):
    import yaml
    from conftest import REVIEWS, write_jsonl

    write_jsonl(tmp_path / "data" / "test.jsonl",
                [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)])
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"test": "data/test.jsonl"}, "inputs": ["text"], "output": "label",
        "labels": ["negative", "positive"], "models": [{"backend": "scripted"}], "tuning": rows}, sort_keys=False))
    return path


def _line(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_dpo_keys_of_a_task_file_are_the_dpo_objective_s_options(tmp_path):
    from taskfit.taskfile import load_task
    from taskfit.tuning import objectives
    from taskfit.tuning.dpo import Options

    task = load_task(_task_with_tuning(tmp_path, [{"method": "lora", "objective": "dpo", "dpo_beta": 0.2,
                                                   "rank": 4}]))
    (spec,) = task.config.tuning
    assert objectives.options(spec) == Options(dpo_beta=0.2)
    assert objectives.split(spec) == ({"dpo_beta": 0.2}, {"rank": 4})  # rank stays the method's


@pytest.mark.parametrize("row, key, match", [
    ({"method": "lora", "dpo_beta": 0.2}, "dpo_beta", "an option of objective dpo; this row's objective is sft"),
    ({"method": "lora", "objective": "classify", "preferences": "p.jsonl"}, "preferences", "objective dpo"),
    ({"method": "lora", "objective": "dpo", "dpo_samples": 1}, "dpo_samples", "greater than or equal to 2"),
    ({"method": "lora", "objective": "dpo", "dpo_beta": 0}, "dpo_beta", "greater than 0"),
])
def test_a_bad_or_misplaced_dpo_key_names_its_file_line_and_key(tmp_path, row, key, match):
    from taskfit.errors import TaskfitError
    from taskfit.taskfile import load_task

    path = _task_with_tuning(tmp_path, [row])
    with pytest.raises(TaskfitError, match=match) as e:
        load_task(path)
    assert e.value.field == f"tuning[0].{key}" and e.value.line == _line(path, f"{key}:")
    assert e.value.file == str(path)


def test_a_dpo_key_on_an_sft_spec_built_in_code_is_an_error_too(make_task, workspace, tiny_models):
    from taskfit.errors import TaskfitError
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune

    task, ds = prepare(make_task())
    with pytest.raises(TaskfitError, match="dpo_loss: an option of objective dpo") as e:
        tune(task, ds.split("train"), TuneSpec(model=str(tiny_models["llama"]), dpo_loss="ipo"),
             store=workspace.tunes)
    assert e.value.field == "tuning[].dpo_loss"


def test_identity_keeps_the_dpo_keys_that_used_to_be_spec_fields(tune_task, tiny_models):
    """The dpo keys were TuneSpec fields, so every stored key hashed them (with their defaults on other rows):
    models trained before they moved to the dpo objective keep their key."""
    import hashlib

    from taskfit.backends.hf import _weights_fingerprint
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import identity, prepare_rows, resolve

    task, ds = prepare(tune_task())
    job = resolve(task, ds.split("train"), TuneSpec(model=str(tiny_models["llama"]), rank=4))
    data = prepare_rows(job)
    as_before = {"spec": {**job.spec.model_dump(exclude={"name", "forgetting", "save_steps", "device"}),
                          "preferences": None, "dpo_samples": 4, "dpo_beta": 0.1, "dpo_loss": "sigmoid"},
                 "options": job.options.model_dump(), "method": "lora", "base": _weights_fingerprint(job.folder),
                 "data": data.data_hash, "sample": data.sample, "labels": ["negative", "positive"], "device": "cpu"}
    assert identity(job, data) == hashlib.sha256(json.dumps(as_before, sort_keys=True).encode()).hexdigest()[:24]


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
def test_interrupted_dpo_resumes_to_the_same_adapter(tune_task, tiny_models, tmp_path, workspace):
    """Stopped after a checkpoint and run again, dpo resumes (adapter, optimizer, schedule, RNG, data position)
    and ends with the weights and loss curve of the run that was never stopped."""
    from conftest import REVIEWS
    from safetensors.torch import load_file

    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune
    from taskfit.workspace import Workspace

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": text, "chosen": label, "rejected": other}) + "\n"
                             for text, label in REVIEWS
                             for other in [{"positive": "negative", "negative": "positive"}[label]]))
    task, ds = prepare(tune_task())
    spec = TuneSpec(objective="dpo", model=str(tiny_models["llama"]), preferences=str(prefs), max_steps=4,
                    batch_size=2, save_steps=2, dropout=0.1, forgetting=False)
    straight = tune(task, ds.split("train"), spec, store=workspace.tunes)
    assert straight.status == "done" and straight.result["resumed_from"] == 0

    other = Workspace.open(tmp_path / "other_home")
    stopped = tune(task, ds.split("train"), spec, store=other.tunes, stop_after=2)
    assert stopped.status == "running" and stopped.result["steps_done"] == 2
    assert (stopped.folder / "trainer" / "checkpoint-2").is_dir()
    ran: list[dict] = []
    resumed = tune(task, ds.split("train"), spec, store=other.tunes, on_step=ran.append)
    assert resumed.id == stopped.id and resumed.status == "done" and resumed.result["resumed_from"] == 2
    assert [p["step"] for p in ran] == [3.0, 4.0]  # only the steps after the checkpoint ran again
    assert resumed.result["steps_done"] == 4 and not (resumed.folder / "trainer").exists()
    a = load_file(straight.folder / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.folder / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [p["loss"] for p in resumed.result["curve"]] == [p["loss"] for p in straight.result["curve"]]
    assert resumed.result["margin_before"] == straight.result["margin_before"]
