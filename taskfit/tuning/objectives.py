"""Whose keys a tuning row holds: the objective's own (dpo's preference options) or the method's own.

A row's keys beyond the ones every run shares (``TuneSpec``'s fields) belong to its objective when the
objective declares them in its ``Options``, else to its method. A key another objective declares is an error
on this row (``dpo_beta`` on an sft row), not an option passed on to the method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from taskfit.errors import TaskfitError
from taskfit.plugins import parse_options
from taskfit.tuning.spec import TuneSpec

OWNERS = {"dpo": "taskfit.tuning.dpo"}  # objective -> the module whose ``Options`` holds its own keys


def options_model(objective: str) -> type[BaseModel] | None:
    """The ``Options`` model of ``objective``, or None when it takes no keys of its own."""
    module = OWNERS.get(objective)
    return importlib.import_module(module).Options if module else None


def split(spec: TuneSpec, where: str = "tuning[]") -> tuple[dict[str, Any], dict[str, Any]]:
    """The row's own keys as (the objective's, the method's); a key of another objective is a TaskfitError
    naming it (``where.<key>``)."""
    check_misplaced(spec, where)
    model = options_model(spec.objective)
    own = set(model.model_fields) if model else set()
    return ({k: v for k, v in spec.options.items() if k in own},
            {k: v for k, v in spec.options.items() if k not in own})


def check_misplaced(spec: TuneSpec, where: str = "tuning[]", *, file: str | None = None,
                    line_of: Callable[[str], int | None] = lambda key: None) -> None:
    """Raise on a key of ``spec`` that another objective declares (``dpo_beta`` on an sft row)."""
    for key in spec.options:
        if (other := owner_of(key)) and other != spec.objective:
            raise TaskfitError(f"{where}.{key}: an option of objective {other}; this row's objective is "
                               f"{spec.objective}", file=file, line=line_of(key), field=f"{where}.{key}")


def owner_of(key: str) -> str | None:
    """The objective that declares ``key``, if any."""
    return next((name for name in OWNERS if key in options_model(name).model_fields), None)


def options(spec: TuneSpec, where: str = "tuning[]") -> BaseModel | None:
    """The objective's own keys of ``spec`` validated against its ``Options`` (None: it declares none)."""
    model = options_model(spec.objective)
    if model is None:
        check_misplaced(spec, where)
        return None
    return parse_options(model, split(spec, where)[0], f"objective {spec.objective}", where)


def without_own_keys(spec: TuneSpec, objective: str) -> TuneSpec:
    """``spec`` with ``objective``, minus the keys of its former objective (dpo trains an sft adapter)."""
    own = set(model.model_fields) if (model := options_model(spec.objective)) else set()
    return TuneSpec(**{**{k: v for k, v in spec.model_dump().items() if k not in own}, "objective": objective})
