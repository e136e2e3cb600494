"""Runs stored by an older version keep loading: their model and strategy entries carry keys that the
backend or strategy no longer declares (older versions stored every backend's keys in every entry)."""

from __future__ import annotations

import pytest

from taskfit.backends import backend_options
from taskfit.errors import TaskfitError
from taskfit.plugins import stored_model, stored_strategy
from taskfit.taskfile import ModelSpec, StrategySpec

OLD_MODEL = {"backend": "scripted", "name": "fake", "price_in_per_1m": 0.0, "price_out_per_1m": 0.0,
             "price_per_hour": None, "script": {"a": "b"}, "base_url": None, "api_key_env": None,
             "chat_template": True, "path": None}
OLD_STRATEGY = {"name": "few_shot", "id": None, "k": 2, "selection": "balanced", "rationale_field": None}


def test_a_stored_model_entry_with_other_backends_keys_rebuilds():
    with pytest.raises(TaskfitError):  # strict, as a task file's entry is
        backend_options(ModelSpec.model_validate(OLD_MODEL))
    spec = stored_model(OLD_MODEL)
    assert spec.options == {"script": {"a": "b"}} and spec.label() == "fake"
    assert backend_options(spec).script == {"a": "b"}


def test_a_stored_strategy_row_keeps_its_own_keys_only():
    spec = stored_strategy(OLD_STRATEGY)
    assert spec.options == {"k": 2, "selection": "balanced"} and spec.label() == "few_shot_balanced"
    assert isinstance(stored_strategy({"name": "zero_shot"}), StrategySpec)
