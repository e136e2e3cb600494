"""Shrinking: torchao weight-only int8/int4 on a tiny model built in code, loaded back by the hf backend."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torchao")

import test_tuning  # noqa: E402

tiny_models = test_tuning.tiny_models  # the 2-layer Llama with SmolLM2's tokenizer


@pytest.fixture(scope="module")
def shrunk(tiny_models, tmp_path_factory):
    from taskfit.shrink import quantize

    root = tmp_path_factory.mktemp("shrunk")
    return {p: quantize(tiny_models["llama"], p, root / p) for p in ("int8", "int4")}


def test_quantized_folders_load_through_the_hf_backend_and_score_close_to_the_parent(tiny_models, shrunk):
    from taskfit.backends import ScoreRequest
    from taskfit.backends.hf import HFBackend
    from taskfit.taskfile import ModelSpec

    reqs = [ScoreRequest(({"role": "user", "content": f"Review: {t}"},), ("positive", "negative"))
            for t in ("a great film", "a dull mess", "fine")]
    parent = HFBackend(tiny_models["llama"], ModelSpec(path=str(tiny_models["llama"])))
    want = [r.logprobs for r in parent.score(reqs)]
    ids = {parent.model_id}
    for precision, folder in shrunk.items():
        b = HFBackend(folder, ModelSpec(path=str(folder)))
        q = b.model.model.layers[0].self_attn.q_proj.weight
        assert type(q).__name__ in ("Int8Tensor", "IntxUnpackedToInt8Tensor"), type(q)
        assert type(b.model.lm_head.weight) is torch.nn.Parameter  # the (tied) head stays full precision
        got = [r.logprobs for r in b.score(reqs)]
        for w, g in zip(want, got, strict=True):
            assert g == pytest.approx(w, abs=0.05 if precision == "int8" else 0.3)
        assert got != want  # it is a different model, not the parent again
        ids.add(b.model_id)
        assert json.loads((folder / "shrink.json").read_text())["precision"] == precision
    assert len(ids) == 3  # distinct cache identities: no answer of one model is served for another


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
def test_footprint_runs_in_a_fresh_process(shrunk, tiny_models):
    from taskfit.shrink import _peak_rss_mb, footprint, size_mb

    ballast = torch.ones(100_000_000)  # a 400 MB peak here, which the measuring process must not inherit
    del ballast
    fp = footprint(shrunk["int8"], ["Review: a great film", "Review: a dull mess"])
    assert fp.ms_per_query > 0 and fp.load_s > 0 and fp.queries == 2
    assert 50 < fp.peak_mb < _peak_rss_mb() - 300
    assert fp.precision == "int8" and fp.size_mb == size_mb(shrunk["int8"])
    assert 0 < size_mb(shrunk["int8"]) < size_mb(tiny_models["llama"])
    assert footprint(tiny_models["llama"], ["Review: a great film"]).precision == "float32"


def test_unknown_precision_is_a_clear_error(tiny_models, tmp_path):
    from taskfit.errors import TaskfitError
    from taskfit.shrink import quantize

    with pytest.raises(TaskfitError, match="int8, int4"):
        quantize(tiny_models["llama"], "int3", tmp_path / "x")


def test_serving_table_and_plan_inference():
    from typer.testing import CliRunner

    from taskfit.cli import app
    from taskfit.shrink import serving_table

    rows = {r["precision"]: r["gb"] for r in serving_table(7e9)}
    assert rows == {"float32": 28.0, "bfloat16": 14.0, "float16": 14.0, "int8": 7.0, "int4": 3.5}
    res = CliRunner().invoke(app, ["plan", "--inference", "--params", "7e9"])
    assert res.exit_code == 0, res.output
    assert "int4" in res.output and "3.50" in res.output


@pytest.mark.slow  # several seconds of training or a subprocess: the slow tier
def test_shrink_command_puts_each_precision_beside_its_parent_on_the_leaderboard(make_task, tiny_models,
                                                                                 taskfit_home, workspace):
    from typer.testing import CliRunner

    from taskfit.cli import app
    from taskfit.leaderboard import rows

    # the task's hf model row says whether the copies use the chat template (here: not)
    task = make_task(strategies=["zero_shot"], models=[{"backend": "hf", "path": str(tiny_models["llama"]),
                                                        "chat_template": False}])
    args = ["shrink", str(task), str(tiny_models["llama"]), "--to", "int8", "--limit", "4", "--queries", "2"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    board = {r["model"]: r for r in json.loads(res.output[res.output.index("[\n"):])}
    assert sorted(board) == ["llama", "llama-int8"]
    assert board["llama"]["precision"] == "float32" and board["llama-int8"]["precision"] == "int8"
    assert all(r["serving_peak_mb"] > 0 and r["ms_per_query"] > 0 for r in board.values())
    assert 0 < board["llama-int8"]["size_mb"] < board["llama"]["size_mb"]
    # kept with the runs: a later leaderboard of the same runs shows the same figures
    stored = rows(workspace, [workspace.runs.get(r["run_id"]) for r in board.values()])
    assert {r.model: r.size_mb for r in stored} == {m: r["size_mb"] for m, r in board.items()}
    assert all(workspace.runs.get(r["run_id"]).config["backend"]["chat_template"] is False for r in board.values())

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "serving" in res.output and "llama-int8:" in res.output and "against llama (p = " in res.output


@pytest.mark.slow
def test_shrinking_the_bundled_model_saves_disk_and_memory(taskfit_home):
    from pathlib import Path

    from typer.testing import CliRunner

    from taskfit.cli import app

    task = Path(__file__).resolve().parents[1] / "examples" / "sst2" / "task.yaml"
    res = CliRunner().invoke(app, ["shrink", str(task), "bundled", "--to", "int8", "--limit", "20", "--queries", "2",
                                   "--json"])
    assert res.exit_code == 0, res.output
    board = {r["precision"]: r for r in json.loads(res.output[res.output.index("[\n"):])}
    parent, int8 = board["float32"], board["int8"]
    assert int8["size_mb"] < 0.6 * parent["size_mb"]  # embeddings and the tied head stay in float32
    assert int8["serving_peak_mb"] < parent["serving_peak_mb"]
    assert parent["n"] == int8["n"] == 20 and int8["score"] >= parent["score"] - 0.2
