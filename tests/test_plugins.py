"""Plugins own their options: a third-party backend installed from a package receives its own settings, and
every model entry's backend options are checked when the task is loaded, naming file, line and key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_jsonl

from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec, load_task

PLUGINS = Path(__file__).resolve().parent / "plugins"  # taskfit_echo and its .dist-info (entry_points.txt)
ROOT = Path(__file__).resolve().parents[1]


def _echo_task(tmp_path: Path, model: dict) -> Path:
    rows = [{"id": f"r{i}", "text": w, "answer": f"{w} {w}"} for i, w in enumerate(["alpha", "beta", "gamma"])]
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    config = {"name": "echo", "data": {"test": "data/test.jsonl"}, "inputs": ["text"], "output": "answer",
              "prompt": {"input_template": "{{ text }}"}, "stop": [], "models": [model]}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _taskfit(args: list[str], home: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), str(PLUGINS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TASKFIT_HOME": str(home), "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "taskfit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_an_installed_backend_plugin_runs_end_to_end_with_its_own_option(tmp_path, taskfit_home):
    task = _echo_task(tmp_path, {"backend": "echo", "name": "echo2", "repeat": 2})
    res = _taskfit(["eval", str(task), "--json"], taskfit_home)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert (row["model"], row["n"], row["score"]) == ("echo2", 3, 1.0)  # "alpha alpha": the option arrived

    task = _echo_task(tmp_path, {"backend": "echo", "name": "echo1"})  # the plugin's default, repeat 1
    (row,) = json.loads(_taskfit(["eval", str(task), "--json"], taskfit_home).stdout)
    assert row["score"] == 0.0


def test_a_bad_plugin_option_names_the_file_line_and_key(tmp_path, taskfit_home):
    task = _echo_task(tmp_path, {"backend": "echo", "repeat": 0})
    res = _taskfit(["eval", str(task)], taskfit_home)
    assert res.returncode != 0
    assert f"{task}:{_line_of(task, 'repeat: 0')}: models[0].repeat" in res.stderr
    assert "greater than or equal to 1" in res.stderr


def test_without_the_package_the_backend_is_unknown(tmp_path, taskfit_home):
    task = _echo_task(tmp_path, {"backend": "echo", "repeat": 2})
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", str(task)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "unknown backend 'echo'" in res.stderr


@pytest.mark.parametrize("entry, key", [
    ({"backend": "hf", "path": "bundled", "base_url": "http://127.0.0.1:8000/v1"}, "base_url"),  # an openai key
    ({"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m", "concurrency": 0}, "concurrency"),
    ({"backend": "scripted", "script": {}, "bits": 4}, "bits"),
    ({"backend": "tuned", "path": "tuned:x", "dtype": "float16"}, "dtype"),
])
def test_each_builtin_backend_checks_its_own_options_at_load(tmp_path, entry, key):
    task = _echo_task(tmp_path, entry)
    with pytest.raises(TaskfitError) as e:
        load_task(task)
    assert e.value.field == f"models[0].{key}"
    assert e.value.line == _line_of(task, f"{key}:") and str(task) in str(e.value)


def test_the_common_keys_stay_on_the_entry_and_the_rest_are_the_backend_s():
    spec = ModelSpec.model_validate({"backend": "hf", "name": "m", "price_in_per_1m": 1.5, "path": "x/y.gguf"})
    assert spec.price_in_per_1m == 1.5 and spec.options == {"path": "x/y.gguf"}
    assert ModelSpec(backend="hf", path="x/y.gguf").label() == "y"  # the hf backend names its rows
    assert ModelSpec(backend="openai", model="gpt").label() == "gpt"


@pytest.mark.parametrize("row, key", [
    ({"method": "qlora", "bits": 2}, "bits"),  # bitsandbytes has no 2-bit layers: refused at load, not mid-run
    ({"method": "lora", "top_n": 3}, "top_n"),  # top_n's option on a lora row
    ({"method": "prefix", "num_virtual_tokens": 0}, "num_virtual_tokens"),
    ({"method": "full", "rank": 8}, "rank"),  # full takes no options
])
def test_each_tuning_method_checks_its_own_options_at_load(tmp_path, row, key):
    task = _echo_task(tmp_path, {"backend": "scripted"})
    config = yaml.safe_load(task.read_text())
    task.write_text(yaml.safe_dump({**config, "tuning": [row]}, sort_keys=False))
    with pytest.raises(TaskfitError) as e:
        load_task(task)
    assert e.value.field == f"tuning[0].{key}" and e.value.line == _line_of(task, f"{key}:")


def test_a_tuning_row_keeps_the_method_s_keys_for_the_method():
    from taskfit.tuning.methods import method
    from taskfit.tuning.spec import TuneSpec

    options = method("qlora").options(TuneSpec(method="qlora", rank=4, bits=8))
    assert (options.rank, options.bits, options.allow_fallback, options.alpha) == (4, 8, False, None)
    assert method("full").options(TuneSpec(method="full")).model_dump() == {}
