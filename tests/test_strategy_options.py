"""Strategies own their options: each declares an ``Options`` model, every `strategies:` row is checked against
it when the task is loaded (naming file, line and key), and ``create`` receives what was parsed."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from test_plugins import ROOT, _echo_task, _line_of, _taskfit

from taskfit.errors import TaskfitError
from taskfit.strategies import BUILTINS, StrategyContext, strategies
from taskfit.taskfile import load_task

# the keys a row of each strategy cannot do without
REQUIRED = {
    "persona": {"persona": "a careful reader"},
    "chain": {"steps": [{"name": "a", "prompt": "{{ text }}"}]},
    "chain_step": {"chain": "c", "step": {"name": "a", "prompt": "{{ text }}"}},
    "rag": {"docs": "docs.jsonl"},
    "react": {"tools": ["calculator"]},
    "tools": {"tools": ["calculator"]},
    "optimized": {"run": "abc123"},
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_declares_options_that_refuse_an_unknown_key(name):
    options = strategies.options(name)
    assert isinstance(options, type) and issubclass(options, BaseModel)
    options.model_validate(REQUIRED.get(name, {}))  # its defaults are valid
    with pytest.raises(ValidationError, match="no_such_key"):
        options.model_validate({**REQUIRED.get(name, {}), "no_such_key": 1})


@pytest.mark.parametrize("entry, key, text", [
    ({"few_shot": {"k": -1}}, "k", "k: -1"),  # the shorthand: options under the strategy's name
    ({"zero_shot": {"foo": 1}}, "foo", "foo: 1"),
    ({"name": "cot", "rationale_field": "solution", "max_tokens": 0}, "max_tokens", "max_tokens: 0"),
    ({"name": "chain", "steps": [{"name": "a", "prompt": "x", "output": "xml"}]}, "steps.0.output", "output: xml"),
])
def test_a_bad_strategy_option_names_the_file_line_and_key_at_load(make_task, entry, key, text):
    path = make_task(strategies=["zero_shot", entry])
    with pytest.raises(TaskfitError) as e:
        load_task(path)
    assert e.value.field == f"strategies[1].{key}"
    assert (e.value.file, e.value.line) == (str(path), _line_of(path, text))


def test_validate_refuses_a_bad_strategy_option(make_task, taskfit_home):
    path = make_task(strategies=[{"few_shot": {"k": -1}}])
    res = _taskfit(["validate", str(path)], taskfit_home)
    assert res.returncode != 0
    assert f"{path}:{_line_of(path, 'k: -1')}: strategies[0].k" in res.stderr
    assert "greater than or equal to 1" in res.stderr


def test_an_unknown_strategy_names_its_line(make_task):
    path = make_task(strategies=["zero_shot", "zero_shoot"])
    with pytest.raises(TaskfitError, match="unknown strategy 'zero_shoot'") as e:
        load_task(path)
    assert e.value.line == _line_of(path, "zero_shoot")


@pytest.mark.parametrize("entry, words", [
    ({"name": "persona", "persona": "a critic", "base": "few_shot", "k": 0}, ["k", "few_shot"]),
    ({"name": "persona", "persona": "a critic", "kk": 2}, ["kk", "zero_shot"]),
    ({"name": "persona", "persona": "a critic", "base": "persona"}, ["cannot wrap persona"]),
    ({"name": "self_consistency", "base": "cot", "rationale_feild": "x"}, ["rationale_feild", "cot"]),
])
def test_a_wrapper_s_keys_for_its_base_strategy_are_checked_at_load(make_task, entry, words):
    path = make_task(strategies=[entry])
    with pytest.raises(TaskfitError) as e:
        load_task(path)
    assert e.value.field == "strategies[0]" and all(w in str(e.value) for w in words)


def test_create_receives_the_options_parsed_at_load(make_task):
    task = load_task(make_task(strategies=[{"few_shot": {"k": 3, "selection": "random"}}]))
    (spec,) = task.config.strategies
    ctx = StrategyContext(task=task, parts=None, train=[object()], mode="generate")
    built = strategies.get("few_shot")(spec, ctx)
    assert built.options is spec._parsed and (built.options.k, built.options.selection) == (3, "random")
    spec.__pydantic_extra__["k"] = 2  # changed in code since: parsed again
    assert strategies.get("few_shot")(spec, ctx).options.k == 2


def test_loading_every_builtin_strategy_imports_no_model_library(make_task):
    rows = [{"name": name, "id": f"row_{name}", **REQUIRED.get(name, {})} for name in sorted(BUILTINS)]
    path = make_task(strategies=rows)
    code = ("import sys; from taskfit.taskfile import load_task; load_task(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'scipy', 'bm25s', 'sentence_transformers', 'peft') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.replace("'", '"')) == []


def test_a_plugin_strategy_runs_with_its_own_option_and_is_checked_at_load(tmp_path, taskfit_home):
    task = _echo_task(tmp_path, {"backend": "echo", "name": "echo1"})
    config = yaml.safe_load(task.read_text())
    task.write_text(yaml.safe_dump({**config, "strategies": [{"parrot": {"times": 2}}]}, sort_keys=False))
    res = _taskfit(["eval", str(task), "--json"], taskfit_home)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert (row["strategy"], row["score"]) == ("parrot", 1.0)  # "alpha alpha": the option arrived

    task.write_text(yaml.safe_dump({**config, "strategies": [{"parrot": {"times": 0}}]}, sort_keys=False))
    res = _taskfit(["validate", str(task)], taskfit_home)
    assert res.returncode != 0
    assert f"{task}:{_line_of(task, 'times: 0')}: strategies[0].times" in res.stderr
