"""`taskfit tune` under `accelerate launch`: two gloo processes on the CPU train the same model as one process
at the same global batch, only the main process writes, and a run killed with kill -9 resumes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_tuning import tiny_models, tune_task  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(task_path: Path, processes: int) -> list[str]:
    tune = ["-m", "taskfit", "tune", str(task_path), "--tuning", "0", "--device", "cpu", "--no-evaluate"]
    if processes == 1:
        return [sys.executable, *tune]
    # the documented CPU launch: torchrun's launcher (--multi_gpu) starts the processes, --device cpu makes
    # them gloo processes on the CPU (accelerate's --cpu flag starts several only through mpirun)
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_port()), *tune]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "TASKFIT_HOME": str(home), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run(task_path: Path, home: Path, processes: int) -> subprocess.CompletedProcess:
    res = subprocess.run(_command(task_path, processes), env=_env(home), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _record(home: Path):
    from taskfit.workspace import Workspace

    (rec,) = Workspace.open(home).tunes.list(10)
    return rec


def _task(tune_task, tiny_models, **spec) -> Path:  # noqa: F811
    row = {"method": "lora", "model": str(tiny_models["llama"]), "batch_size": 8, "dropout": 0.0,
           "forgetting": False, "lr": 5e-3, **spec}
    path = tune_task(n_train=40)
    config = yaml.safe_load(path.read_text())
    config["tuning"] = [row]
    path.write_text(yaml.safe_dump(config))
    return path


def _same_curve(a: list[dict], b: list[dict]) -> None:
    assert [p["step"] for p in a] == [p["step"] for p in b]
    assert [p["lr"] for p in a] == pytest.approx([p["lr"] for p in b])
    assert [p["loss"] for p in a] == pytest.approx([p["loss"] for p in b], rel=1e-4, abs=1e-5)


def _same_adapter(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = (load_file(f / "adapter" / "adapter_model.safetensors") for f in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


@pytest.mark.slow  # two launches of two processes: about a minute and a half on 2 cores
def test_two_processes_reproduce_the_single_process_loss_curve(tune_task, tiny_models, tmp_path):  # noqa: F811
    # 40 rows at a global batch of 8 over 7 steps: a second epoch, and a batch of 3 rows split 2 + 1
    task_path = _task(tune_task, tiny_models, max_steps=7)
    one = _run(task_path, tmp_path / "one", 1)
    two = _run(task_path, tmp_path / "two", 2)
    a, b = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert a.status == b.status == "done"
    assert a.result["processes"] == 1 and b.result["processes"] == 2
    # each process ran its share of every batch, not the whole batch
    assert a.result["process_tokens"] == a.result["tokens"] == b.result["tokens"]
    assert 0.4 < b.result["process_tokens"] / b.result["tokens"] < 0.6
    _same_curve(a.result["curve"], b.result["curve"])
    _same_adapter(a.folder, b.folder)
    assert "x 2 processes" in two.stderr and "x 2 processes" not in one.stderr
    assert two.stdout.count("tuned:") == one.stdout.count("tuned:")  # only the main process reports


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in children.read_text().split()]
    return out


@pytest.mark.slow
def test_two_processes_killed_after_a_checkpoint_resume_to_the_same_curve(tune_task, tiny_models, tmp_path):  # noqa: F811
    task_path = _task(tune_task, tiny_models, max_steps=80, save_steps=2)
    home = tmp_path / "two"
    proc = subprocess.Popen(_command(task_path, 2), env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not list(home.rglob("checkpoints/last.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    tree = _process_tree(proc.pid)  # torchrun starts each worker in a session of its own
    assert len(tree) >= 3, tree  # the launcher, torchrun's agent or the launcher itself, and two workers
    for pid in tree:  # the launcher and both training processes, mid-run
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed = _record(home)
    assert killed.status == "running" and (killed.folder / "checkpoints" / "last.pt").exists()
    _run(task_path, home, 2)
    resumed = _record(home)
    assert resumed.id == killed.id and resumed.status == "done" and resumed.result["resumed_from"] >= 2
    _run(task_path, tmp_path / "one", 1)
    straight = _record(tmp_path / "one")
    _same_curve(straight.result["curve"], resumed.result["curve"])
    _same_adapter(straight.folder, resumed.folder)


def _tune_in_process(workspace, task_path, **spec):
    from taskfit.study import prepare
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import tune

    task, ds = prepare(task_path)
    return tune(task, ds.split("train"), TuneSpec(**spec), store=workspace.tunes)


def test_gradient_checkpointing_recomputes_the_same_training(tune_task, tiny_models, workspace):  # noqa: F811
    base = dict(method="lora", model=str(tiny_models["llama"]), max_steps=3, batch_size=8, dropout=0.0,
                forgetting=False, lr=5e-3)
    plain = _tune_in_process(workspace, tune_task(), **base)
    ckpt = _tune_in_process(workspace, tune_task(), **base, gradient_checkpointing=True)
    assert ckpt.id != plain.id and ckpt.result["gradient_checkpointing"]
    _same_curve(plain.result["curve"], ckpt.result["curve"])
    assert ckpt.result["plan"]["activations_mb"] < plain.result["plan"]["activations_mb"]


def test_bf16_autocast_trains_and_is_recorded(tune_task, tiny_models, workspace):  # noqa: F811
    spec = dict(method="lora", model=str(tiny_models["llama"]), max_steps=3, batch_size=8, dropout=0.0,
                forgetting=False, lr=5e-3)
    fp32 = _tune_in_process(workspace, tune_task(), **spec, mixed_precision="no")
    bf16 = _tune_in_process(workspace, tune_task(), **spec, mixed_precision="bf16")
    assert bf16.result["mixed_precision"] == "bf16" and fp32.result["mixed_precision"] == "no"
    a, b = ([p["loss"] for p in r.result["curve"]] for r in (fp32, bf16))
    assert a != b  # the forward really ran in bf16 ...
    assert b == pytest.approx(a, rel=0.05)  # ... and computes the same training to bf16's precision
    assert bf16.result["plan"]["activations_mb"] < fp32.result["plan"]["activations_mb"]


def test_plan_terms_for_processes_zero_stages_and_precision(tune_task, tiny_models):  # noqa: F811
    from taskfit.study import prepare
    from taskfit.tuning import plan as tplan
    from taskfit.tuning.spec import TuneSpec
    from taskfit.tuning.tune import apply_method, build_model, prepare_rows, resolve

    task, ds = prepare(tune_task(n_train=64))
    job = resolve(task, ds.split("train"), TuneSpec(method="full", model=str(tiny_models["llama"]), batch_size=16,
                                                    device="cpu"))
    data = prepare_rows(job)
    model = apply_method(job, build_model(job))
    one = tplan.predict(job, data, model, probe_batches=1, runtime_bytes=0)
    assert one.processes == 1 and one.zero_stage == 0
    plans = {z: tplan.predict(job, data, model, probe_batches=1, runtime_bytes=0, processes=4, zero_stage=z) for z in range(4)}
    assert plans[0].largest_batch[0] == -(-one.largest_batch[0] // 4)
    assert plans[0].activations_mb < one.activations_mb and plans[0].logits_mb < one.logits_mb
    assert plans[0].optimizer_mb == pytest.approx(one.optimizer_mb)
    assert plans[1].optimizer_mb == pytest.approx(one.optimizer_mb / 4)
    assert plans[1].gradients_mb == pytest.approx(one.gradients_mb)
    assert plans[2].gradients_mb == pytest.approx(one.gradients_mb / 4)
    assert plans[2].weights_mb == pytest.approx(one.weights_mb)
    assert plans[3].weights_mb == pytest.approx(one.weights_mb / 4)
    assert plans[3].peak_mem_mb < plans[2].peak_mem_mb < plans[1].peak_mem_mb < plans[0].peak_mem_mb
