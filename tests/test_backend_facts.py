"""What a dry run knows of a model comes from its backend's ``facts`` hook, found through the backend registry;
a backend without one (a third-party package) gets the generic facts."""

from __future__ import annotations

import pytest
from test_plugins import PLUGINS

from taskfit.backends import backends
from taskfit.backends.facts import ModelFacts, chars, model_facts, words
from taskfit.backends.scripted import ScriptedBackend
from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec
from taskfit.workspace import Workspace

MESSAGES = [{"role": "user", "content": "three short words and more"}]


def facts(spec, cache) -> ModelFacts:  # the hook of the backend registered below, found in its module
    return ModelFacts(f"probe:{spec.label()}", words, True, can_score=False)


def _probe_create(spec):
    raise AssertionError("a dry run builds no backend")


def test_a_registered_backend_s_own_facts_hook_is_used(monkeypatch, tmp_path):
    monkeypatch.setitem(backends._loaded, "probe", _probe_create)
    got = model_facts(ModelSpec(backend="probe", name="p1"), Workspace.open(tmp_path / "ws").cache)
    assert (got.model_id, got.remote, got.can_score, got.count(MESSAGES)) == ("probe:p1", True, False, 5)


def test_the_builtins_declare_their_facts(tmp_path):
    cache = Workspace.open(tmp_path / "ws").cache
    spec = ModelSpec(backend="scripted", name="s", script={"default": "x"})
    got = model_facts(spec, cache)
    assert got.model_id == ScriptedBackend({"default": "x"}, name="s").model_id and got.count(MESSAGES) == 5
    spec = ModelSpec(backend="openai", base_url="http://127.0.0.1:8000/v1/", model="m")
    got = model_facts(spec, cache)
    # whether it scores labels is unknown until the first call probes the server (or the task file names a path)
    assert (got.model_id, got.remote, got.can_score) == ("openai:http://127.0.0.1:8000/v1:m", True, None)
    assert model_facts(spec.model_copy(update={"score_via": "generate"}), cache).can_score is False
    assert model_facts(spec.model_copy(update={"score_via": "completions"}), cache).can_score is True
    for url in ("http://u:secret@127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1;token=secret"):
        with pytest.raises(TaskfitError, match="api_key_env") as e:  # refused as the backend refuses it
            model_facts(ModelSpec(backend="openai", base_url=url, model="m"), cache)
        assert "secret" not in str(e.value)


def test_a_plugin_backend_without_a_hook_gets_the_generic_facts(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(PLUGINS))
    import taskfit_echo

    monkeypatch.setitem(backends._loaded, "echo", taskfit_echo.create)
    got = model_facts(ModelSpec(backend="echo", repeat=2), Workspace.open(tmp_path / "ws").cache)
    assert (got.model_id, got.remote, got.count) == (None, False, chars)
