"""Real scores through a server: a loopback vLLM-style server backed by a transformers model must give the label
log-likelihoods the in-process hf backend gives, and tuned LoRA adapters loaded into it at run time must predict
what they predict in-process."""

from __future__ import annotations

import pytest
import yaml
from conftest import serving
from hf_server import HFServer
from test_tuning import tiny_models, tune_task  # noqa: F401  (fixtures: a 2-layer Llama with a real tokenizer)

from taskfit.backends import ScoreRequest
from taskfit.backends.hf import create as hf_create
from taskfit.backends.openai import OpenAIBackend
from taskfit.taskfile import ModelSpec

REQUESTS = [
    ScoreRequest([{"role": "user", "content": "Review: a great and moving film"}], ("positive", "negative")),
    ScoreRequest([{"role": "system", "content": "You label reviews."},
                  {"role": "user", "content": "Review: boring and far too long"},
                  {"role": "assistant", "content": "Sentiment:"}], (" positive", " negative", " card_arrival")),
    ScoreRequest([{"role": "user", "content": "Which intent? I lost my card"}],
                 ("lost_or_stolen_card", "card_arrival", "Positive")),
]


def _same_scores(folder, served_name: str, tokenizer: str | None) -> None:
    local = hf_create(ModelSpec(path=str(folder), device="cpu", batch_size=2))
    expected = local.score(REQUESTS)
    server = HFServer(folder, name=served_name)
    spec = ModelSpec(backend="openai", base_url=server.base_url, model=served_name, tokenizer=tokenizer)
    with serving(server.httpd), OpenAIBackend(spec) as remote:
        assert remote.probe().score_via == "completions", remote.probe().why()
        got = remote.score(REQUESTS)
    for e, g in zip(expected, got, strict=True):
        assert g.error is None
        assert g.token_counts == e.token_counts and g.tokens_in == e.tokens_in
        assert g.logprobs == pytest.approx(e.logprobs, abs=1e-4)


@pytest.mark.parametrize("tokens", ["local tokenizer", "server /tokenize"])
def test_completions_through_a_real_model_equal_the_hf_backend(tiny_models, tokens):  # noqa: F811
    folder = tiny_models["llama"]
    _same_scores(folder, "tiny", str(folder) if tokens == "local tokenizer" else None)


@pytest.mark.slow
def test_completions_through_the_bundled_model_equal_the_hf_backend():
    from taskfit import bundled

    _same_scores(bundled.smollm2_dir(), "HuggingFaceTB/SmolLM2-135M-Instruct", None)


def test_two_lora_adapters_on_one_server_predict_as_in_process(tune_task, tiny_models, workspace):  # noqa: F811
    from taskfit.study import prepare, run_study
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import Job, tune

    path = tune_task()
    task, ds = prepare(path)
    recs = [tune(task, ds.split("train"), TuneSpec(method="lora", model=str(tiny_models["llama"]), max_steps=4,
                                                   batch_size=8, lr=5e-2, seed=seed, forgetting=False), store=workspace.tunes)
            for seed in (1, 2)]
    row = Job.strategy_for(task, TuneSpec(**recs[0].spec)).label()
    names = [f"tuned:{r.id}" for r in recs]
    _, in_process = run_study(path, workspace=workspace, strategy_names=[row], model_names=names)

    server = HFServer(tiny_models["llama"], name="tiny")
    config = yaml.safe_load(path.read_text())
    config["models"].append({"backend": "tuned", "serve_via": {"base_url": server.base_url}})
    path.write_text(yaml.safe_dump(config))
    with serving(server.httpd):
        _, served = run_study(path, workspace=workspace, strategy_names=[row], model_names=names)

    # both adapters went to the one server, were scored under their own names, and were unloaded afterwards
    lora_names = [load["lora_name"] for load in server.loads]
    assert len(lora_names) == 2 and set(server.served) == set(lora_names) and sorted(server.unloads) == sorted(lora_names)
    assert {load["lora_path"] for load in server.loads} == {str((r.folder / "adapter").resolve()) for r in recs}
    store = workspace.runs
    by_model = lambda rows: {r.model: r for r in rows}  # noqa: E731
    local_rows, served_rows = by_model(in_process), by_model(served)
    per_adapter = []
    for name in names:
        a, b = local_rows[name], served_rows[name]
        assert (b.score_via, b.server, a.score_via, a.server) == ("completions", server.base_url, "local", None)
        pa = {p.example_id: p for p in store.predictions(a.run_id)}
        pb = {p.example_id: p for p in store.predictions(b.run_id)}
        assert {k: p.answer for k, p in pa.items()} == {k: p.answer for k, p in pb.items()}
        for k in pa:
            la, lb = pa[k].trace["details"]["label_logprobs"], pb[k].trace["details"]["label_logprobs"]
            assert lb == pytest.approx(la, abs=2e-4)
        per_adapter.append([pa[k].trace["details"]["label_logprobs"] for k in sorted(pa)])
    assert per_adapter[0] != per_adapter[1]  # the server really applied each adapter: they score differently

    from rich.console import Console

    from taskfit.leaderboard import render

    console = Console(width=400, record=True)
    console.print(render(served))
    assert f"completions on {server.base_url}" in console.export_text()


def test_what_a_server_cannot_load_is_refused_with_the_reason(tmp_path):
    import json
    from types import SimpleNamespace

    from test_server_scoring import FakeServer

    from taskfit.backends import served_adapter
    from taskfit.errors import TaskfitError

    rec = SimpleNamespace(id="t1", folder=tmp_path / "t1")
    (rec.folder / "adapter").mkdir(parents=True)
    (rec.folder / "tokenizer").mkdir()
    meta = {"objective": "sft", "method_used": "ia3", "weights_sha": "0" * 12, "chat_template": True}
    server = FakeServer()  # no dynamic-LoRA endpoints: 404
    spec = ModelSpec(backend="tuned", path="tuned:t1", serve_via={"base_url": server.base_url})
    config = rec.folder / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(TaskfitError, match="plain LoRA adapters only"):
        served_adapter.create(spec, rec, meta)
    config.write_text(json.dumps({"peft_type": "LORA", "use_dora": False}))
    with serving(server.httpd), pytest.raises(TaskfitError, match=r"HTTP 404.*--enable-lora"):
        served_adapter.create(spec, rec, meta)
    with pytest.raises(TaskfitError, match="serve_via: base_url: Field required"):
        served_adapter.create(spec.model_copy(update={"serve_via": {"url": "http://x"}}), rec, meta)
