"""Fine-tuning on tiny models built in code: one row per method, the loss mask, resume, plan, adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REVIEWS, write_jsonl

from taskfit.errors import TaskfitError


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer Llama with SmolLM2's tokenizer (chat template) and a 2-layer BERT with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from taskfit import bundled

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(bundled.smollm2_dir())
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id or 0,
                                         eos_token_id=tok.eos_token_id))
    llama.save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    btok = AutoTokenizer.from_pretrained(bundled.minilm_dir())
    bert = BertModel(BertConfig(vocab_size=len(btok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4))
    bert.config.architectures = ["BertModel"]
    bert.save_pretrained(root / "bert")
    btok.save_pretrained(root / "bert")
    return {"llama": root / "llama", "bert": root / "bert"}


@pytest.fixture
def tune_task(tmp_path, tiny_models):
    def _make(tuning: list[dict] | None = None, n_train: int = 24) -> Path:
        rows = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
        train = [{"id": f"t{i}", "text": REVIEWS[i % 8][0] + f" ({i})", "label": REVIEWS[i % 8][1]}
                 for i in range(n_train)]
        write_jsonl(tmp_path / "data" / "test.jsonl", rows)
        write_jsonl(tmp_path / "data" / "train.jsonl", train)
        config = {"name": "tiny", "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
                  "inputs": ["text"], "output": "label", "labels": ["negative", "positive"],
                  "prompt": {"instruction": "Positive or negative?", "response_prefix": "Sentiment:"},
                  "strategies": ["zero_shot"], "models": [{"backend": "hf", "path": str(tiny_models["llama"])}],
                  "tuning": tuning or []}
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(config))
        return path
    return _make


def _tune(workspace, task_path, **spec):
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune

    task, ds = prepare(task_path)
    spec.setdefault("forgetting", False)
    log = spec.pop("log", lambda line: None)
    return tune(task, ds.split("train"), TuneSpec(**spec), store=workspace.tunes, log=log), task, ds


def _score(workspace, task_path, rec):
    from taskfit.study import prepare, run_study
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import Job

    task, _ = prepare(task_path)
    row = Job.strategy_for(task, TuneSpec(**rec.spec))
    _, table = run_study(task_path, workspace=workspace, strategy_names=[row.label()], model_names=[f"tuned:{rec.id}"])
    return table[0]


SFT_METHODS = ["full", "top_n", "lora", "dora", "ia3", "prefix", "prompt_tuning"]
OWN_OPTIONS = {"top_n": {"top_n": 1}, "prefix": {"num_virtual_tokens": 4}, "prompt_tuning": {"num_virtual_tokens": 4}}


@pytest.mark.parametrize("method", SFT_METHODS)
def test_sft_method_trains_saves_and_evaluates(tune_task, tiny_models, method, workspace):
    task_path = tune_task()
    rec, _, _ = _tune(workspace, task_path, method=method, model=str(tiny_models["llama"]), max_steps=3, batch_size=8,
                      **OWN_OPTIONS.get(method, {}))
    r = rec.result
    assert rec.status == "done" and r["steps_done"] == 3
    assert 0 < r["trainable_params"] <= r["total_params"]
    if method == "full":
        assert r["trainable_params"] == r["total_params"]
    else:
        assert r["trainable_params"] < r["total_params"]
    assert r["curve"][0]["loss"] > 0 and len(r["curve"]) == 3
    saved = rec.folder / ("model" if method in ("full", "top_n") else "adapter")
    assert list(saved.glob("*.safetensors"))
    template = json.loads((rec.folder / "template.json").read_text())
    assert "Sentiment:" in template["rendered_row"] and "<|im_start|>assistant" in template["rendered_row"]
    row = _score(workspace, task_path, rec)
    assert row.n == 8 and row.failed == 0
    assert row.tune["method"] == method and row.tune["train_time_s"] > 0


@pytest.mark.parametrize("method", ["head", "lora", "full", "top_n"])
def test_classify_method_on_an_encoder(tune_task, tiny_models, method, workspace):
    task_path = tune_task()
    rec, _, _ = _tune(workspace, task_path, method=method, objective="classify", model=str(tiny_models["bert"]), epochs=2,
                      batch_size=8, **OWN_OPTIONS.get(method, {}))
    assert rec.status == "done"
    r = rec.result
    if method == "head":  # only the new head: weight and bias of a 32 -> 2 layer
        assert r["trainable_params"] == 32 * 2 + 2
    row = _score(workspace, task_path, rec)
    assert row.strategy == "classifier" and row.n == 8 and row.failed == 0
    assert [x["before"] for x in r["before_after"]] and all("after" in x for x in r["before_after"])


def test_sft_rows_put_the_loss_on_the_answer_and_end_of_turn_only(tune_task, tiny_models):
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import prepare_rows, resolve

    task, ds = prepare(tune_task())
    data = prepare_rows(resolve(task, ds.split("train"), TuneSpec(model=str(tiny_models["llama"]))))
    row, ex = data.rows[0], ds.split("train")[0]
    answer = [t for t in row.labels if t != -100]
    assert data.tokenizer.decode(answer) == f" {ex.target}<|im_end|>"
    assert row.input_ids[-len(answer):] == answer  # the answer closes the row; everything before is prompt
    assert row.labels[: len(row) - len(answer)] == [-100] * (len(row) - len(answer))


def test_answer_only_loss_equals_the_full_forward_loss(tune_task, tiny_models):
    """Left padding + logits for the last columns gives exactly the loss of the plain right-padded forward."""
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.train import answer_loss, collate
    from taskfit.tuning.tune import build_model, prepare_rows, resolve

    task, ds = prepare(tune_task())
    job = resolve(task, ds.split("train"), TuneSpec(model=str(tiny_models["llama"])))
    data = prepare_rows(job)
    model = build_model(job).eval()
    rows = data.rows[:6]
    assert len({len(r) for r in rows}) > 1  # different lengths: padding matters
    pad = data.tokenizer.pad_token_id
    with torch.no_grad():
        fast = answer_loss(model, collate(rows, pad, torch.device("cpu"), left=True))
        plain = model(**collate(rows, pad, torch.device("cpu"))).loss
    assert torch.allclose(fast, plain, atol=1e-5)


def test_interrupted_training_resumes_to_the_same_weights(tune_task, tiny_models, tmp_path, monkeypatch, workspace):
    from safetensors.torch import load_file

    task_path = tune_task(n_train=32)
    spec = dict(method="lora", model=str(tiny_models["llama"]), max_steps=6, batch_size=4, save_steps=2,
                dropout=0.1)
    straight, _, _ = _tune(workspace, task_path, **spec)
    weights_a = load_file(straight.folder / "adapter" / "adapter_model.safetensors")
    curve_a = straight.result["curve"]

    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune
    from taskfit.workspace import Workspace

    other = Workspace.open(tmp_path / "other_home")  # not the finished model above: train again, stop, resume
    task, ds = prepare(task_path)
    stopped = tune(task, ds.split("train"), TuneSpec(**spec, forgetting=False), store=other.tunes, stop_after=3)
    assert stopped.status == "running" and (stopped.folder / "checkpoints" / "last.pt").exists()
    resumed = tune(task, ds.split("train"), TuneSpec(**spec, forgetting=False), store=other.tunes)
    assert resumed.id == stopped.id and resumed.status == "done" and resumed.result["resumed_from"] == 3
    weights_b = load_file(resumed.folder / "adapter" / "adapter_model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k
    assert [p["loss"] for p in resumed.result["curve"]] == [p["loss"] for p in curve_a]


def test_same_spec_same_data_is_not_trained_twice(tune_task, tiny_models, workspace):
    task_path = tune_task()
    a, _, _ = _tune(workspace, task_path, method="lora", model=str(tiny_models["llama"]), max_steps=2)
    b, _, _ = _tune(workspace, task_path, method="lora", model=str(tiny_models["llama"]), max_steps=2)
    c, _, _ = _tune(workspace, task_path, method="lora", model=str(tiny_models["llama"]), max_steps=2, rank=4)
    assert a.id == b.id and c.id != a.id


def test_qlora_without_cuda_explains_and_falls_back_only_when_asked(tune_task, tiny_models, workspace):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    task_path = tune_task()
    with pytest.raises(TaskfitError, match="CUDA"):
        _tune(workspace, task_path, method="qlora", model=str(tiny_models["llama"]), max_steps=1)
    rec, _, _ = _tune(workspace, task_path, method="qlora", model=str(tiny_models["llama"]), max_steps=1, allow_fallback=True)
    assert rec.result["method_used"] == "lora" and "CUDA" in rec.result["fallback"]


def test_method_objective_mismatch_is_a_clear_error(tune_task, tiny_models, workspace):
    with pytest.raises(TaskfitError, match="head"):
        _tune(workspace, tune_task(), method="head", model=str(tiny_models["llama"]), max_steps=1)
    with pytest.raises(TaskfitError, match="encoder"):
        _tune(workspace, tune_task(), method="lora", objective="sft", model=str(tiny_models["bert"]), max_steps=1)
    with pytest.raises(TaskfitError, match="unknown tuning method"):
        _tune(workspace, tune_task(), method="lorax", model=str(tiny_models["llama"]), max_steps=1)


def test_plan_parts_add_up_and_are_stored_with_the_measurement(tune_task, tiny_models, workspace):
    logs: list[str] = []
    rec, _, _ = _tune(workspace, tune_task(), method="lora", model=str(tiny_models["llama"]), max_steps=2,
                      log=logs.append)
    plan = rec.result["plan"]
    started = next(line for line in logs if line.startswith("training "))  # the planned time, before training
    assert started.endswith(f"; planned {plan['total_time_s']:.0f} s")
    parts = ("weights_mb", "gradients_mb", "optimizer_mb", "activations_mb", "logits_mb", "runtime_mb")
    assert plan["peak_mem_mb"] == pytest.approx(sum(plan[p] for p in parts))
    assert plan["optimizer_mb"] == pytest.approx(2 * plan["gradients_mb"])  # fp32 grads, two fp32 moments
    assert plan["time_per_epoch_s"] > 0 and plan["probe_s_per_token"] > 0
    assert rec.result["measured"]["peak_mem_mb"] > 0


def test_classic_table_matches_the_rule_of_thumb():
    from taskfit.tuning.plan import classic_table

    rows = {r["method"]: r["gb"] for r in classic_table(7e9)}
    assert rows["full, 32-bit"] == pytest.approx(112)  # 16 bytes a weight
    assert rows["full, 16-bit"] == pytest.approx(56)
    assert rows["full, 32-bit"] > rows["LoRA, 16-bit"] > rows["QLoRA, 8-bit"] > rows["QLoRA, 4-bit"] > rows["QLoRA, 2-bit"]


def test_merge_gives_the_same_scores_as_the_adapter(tune_task, tiny_models, workspace):
    from taskfit.backends import ScoreRequest
    from taskfit.backends.hf import HFBackend
    from taskfit.backends.tuned import create
    from taskfit.taskfile import ModelSpec
    from taskfit.tuning.adapters import merge

    rec, _, _ = _tune(workspace, tune_task(), method="lora", model=str(tiny_models["llama"]), max_steps=3, lr=1e-2)
    folder = merge(rec.id, store=workspace.tunes)
    req = [ScoreRequest(({"role": "user", "content": "great film"}, {"role": "assistant", "content": "Sentiment:"}),
                        (" positive", " negative"))]
    tuned = create(ModelSpec(backend="tuned", path=f"tuned:{rec.id}"), workspace=workspace).score(req)[0].logprobs
    merged = HFBackend(folder, ModelSpec(path=str(folder))).score(req)[0].logprobs
    assert merged == pytest.approx(tuned, abs=1e-4)


def test_adapter_set_switches_between_adapters_on_one_base(tune_task, tiny_models, workspace):
    from taskfit.tuning.adapters import AdapterSet

    task_path = tune_task()
    a, _, _ = _tune(workspace, task_path, method="lora", model=str(tiny_models["llama"]), max_steps=3, lr=5e-2, seed=1)
    b, _, _ = _tune(workspace, task_path, method="lora", model=str(tiny_models["llama"]), max_steps=3, lr=5e-2, seed=2)
    aset = AdapterSet({"one": a.id, "two": b.id}, device="cpu", store=workspace.tunes)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out_one = aset.use("one")(input_ids=ids).logits
        out_two = aset.use("two")(input_ids=ids).logits
        again = aset.use("one")(input_ids=ids).logits
    assert not torch.allclose(out_one, out_two) and torch.allclose(out_one, again)
    with pytest.raises(TaskfitError, match="no adapter"):
        aset.use("three")


def test_forgetting_check_measures_before_and_after(tune_task, tiny_models, workspace):
    rec, _, _ = _tune(workspace, tune_task(), method="full", model=str(tiny_models["llama"]), max_steps=2, lr=1e-2,
                      forgetting=True)
    f = rec.result["forgetting"]
    assert f["ppl_before"] > 1 and f["ppl_after"] > 1 and f["ppl_before"] != f["ppl_after"]
    assert 0 <= f["score_before"] <= 1 and 0 <= f["score_after"] <= 1
    assert "AG News" in f["general_task"]


def test_study_with_tuning_puts_tuned_models_on_the_leaderboard_and_reuses_them(tune_task, tiny_models, workspace):
    from taskfit.study import run_study

    task_path = tune_task(tuning=[
        {"method": "lora", "model": str(tiny_models["llama"]), "max_steps": 2, "forgetting": False},
        {"method": "head", "objective": "classify", "model": str(tiny_models["bert"]), "max_steps": 2,
         "forgetting": False, "name": "bert-head"}])
    _, table = run_study(task_path, workspace=workspace, with_tuning=True)
    tuned = [r for r in table if r.tune]
    assert {r.model for r in tuned} == {"llama+lora", "bert-head"}
    assert all(r.n == 8 for r in table)
    n_tunes = len(workspace.tunes.list())
    run_study(task_path, workspace=workspace, with_tuning=True)
    assert len(workspace.tunes.list()) == n_tunes  # trained once, then reused


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
def test_cli_tune_plan_show_and_runs(tune_task, tiny_models, tmp_path):
    import os
    import subprocess
    import sys

    task_path = tune_task()
    env = {**os.environ}
    run = lambda *a: subprocess.run([sys.executable, "-m", "taskfit.cli", *a], capture_output=True, text=True,  # noqa: E731
                                    env=env, timeout=600)
    res = run("plan", str(task_path), "--model", str(tiny_models["llama"]), "--params", "7e9")
    assert res.returncode == 0, res.stderr
    assert "peak" in res.stdout and "QLoRA, 4-bit" in res.stdout
    res = run("tune", str(task_path), "--method", "lora", "--model", str(tiny_models["llama"]), "--max-steps", "2")
    assert res.returncode == 0, res.stderr
    assert "plan vs measured" in res.stdout and "Predictions before and after training" in res.stdout
    tid = res.stdout.split("tuned:")[1].split()[0]
    res = run("show", f"tuned:{tid}")
    assert res.returncode == 0 and "before" in res.stdout
    res = run("runs")
    assert res.returncode == 0 and f"tuned:{tid}" in res.stdout and "%" in res.stdout
    res = run("tune", str(task_path), "--method", "nope", "--model", str(tiny_models["llama"]))
    assert res.returncode == 2 and "unknown tuning method" in res.stderr


@pytest.mark.slow
def test_real_models_tune_and_join_the_leaderboard(workspace):
    """The bundled MiniLM with a LoRA head and the bundled SmolLM2 after a few LoRA SFT steps, on SST-2."""
    from taskfit.study import run_study

    task = Path(__file__).resolve().parents[1] / "examples" / "sst2" / "task.yaml"
    _, table = run_study(task, workspace=workspace, strategy_names=["zero_shot"], limit=16, with_tuning=True,
                         train_limit=64)
    tuned = {r.model: r for r in table if r.tune}
    # the task file's tuning rows, and its distilled student (MiniLM on the 135M model's labels)
    assert set(tuned) == {"minilm+lora-head", "minilm+full", "smollm2+lora-sft", "minilm+full~structured@smollm2-135m"}
    head = tuned["minilm+lora-head"].tune
    assert head["trainable_pct"] < 5 and head["forgetting"]["general_task"].startswith("retrieval")
    sft = tuned["smollm2+lora-sft"].tune
    assert sft["forgetting"]["ppl_before"] > 1 and sft["plan"]["peak_mem_mb"] > 0
    assert all(r.n == 16 and r.failed == 0 for r in table)
