"""Plugins own their options: a task file's entries checked against the registries when the task is prepared.

Each backend, strategy and tuning method declares a pydantic model of its own keys (``Options`` in its module);
a task-file entry keeps its common keys (``name``, ``backend``, prices, ...) and the rest is validated against
that model here, so a third-party plugin registered by entry point receives settings taskfit knows nothing of.
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from taskfit.errors import TaskfitError

T = TypeVar("T", bound=BaseModel)


class AnyOptions(BaseModel):
    """The options of a plugin that declares no model: every key is passed on unchecked."""

    model_config = ConfigDict(extra="allow")


def problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())


def parse_options(model: type[T] | None, raw: dict[str, Any], owner: str, where: str) -> T:
    """``raw`` validated against ``model``; a TaskfitError naming ``owner`` and the key (``where.<key>``)."""
    try:
        return (model or AnyOptions).model_validate(raw)
    except ValidationError as e:
        key = ".".join(str(p) for p in e.errors()[0]["loc"])
        raise TaskfitError(f"{owner}: {problems(e)}", field=f"{where}.{key}" if key else where) from None


def check_task(task: Any, root: yaml.Node | None) -> None:
    """Fail at load, not mid-run, on an unknown metric/strategy/backend name or a bad backend, strategy or tuning
    option, naming the file, line and key."""
    from taskfit.backends import backends
    from taskfit.metrics import metrics
    from taskfit.strategies import strategies
    from taskfit.taskfile import _line_of

    c = task.config
    for i, m in enumerate(c.metrics):
        _known(metrics.names(), m.name, "metric", ("metrics", i), task, root)
    for i, s in enumerate(c.strategies):
        _known(strategies.names(), s.name, "strategy", ("strategies", i), task, root)
        # create() receives these parsed options (see taskfit.strategies.options)
        s._parsed = _check_options(strategies.options(s.name), s.options, ("strategies", i), f"strategy {s.name!r}",
                                   task, root, _named_entry(root, ("strategies", i)))
    for i, m in enumerate(c.models):
        _known(backends.names(), m.backend, "backend", ("models", i, "backend"), task, root)
        _check_options(backends.options(m.backend), m.options, ("models", i), f"backend {m.backend!r}", task, root)
    if c.tuning:  # the methods load torch and peft: only for a task that tunes
        from taskfit.tuning import objectives
        from taskfit.tuning.methods import methods

        for i, t in enumerate(c.tuning):
            _known(methods.names(), t.method, "tuning method", ("tuning", i, "method"), task, root)
            objectives.check_misplaced(t, f"tuning[{i}]", file=str(task.path),
                                       line_of=lambda key, i=i: _line_of(root, ("tuning", i, key)))
            own, rest = objectives.split(t, f"tuning[{i}]")
            if model := objectives.options_model(t.objective):
                _check_options(model, own, ("tuning", i), f"objective {t.objective!r}", task, root)
            _check_options(methods.options(t.method), rest, ("tuning", i), f"tuning method {t.method!r}",
                           task, root)
    labels = [s.label() for s in c.strategies]
    dupes = {x for x in labels if labels.count(x) > 1}
    if dupes:
        raise TaskfitError(f"two strategies share the row name {sorted(dupes)}; give one an `id:`",
                           file=str(task.path), field="strategies")


def _check_options(model: type[BaseModel] | None, raw: dict[str, Any], at: tuple[str, int], owner: str, task: Any,
                   root: yaml.Node | None, yaml_at: tuple[Any, ...] | None = None) -> BaseModel:
    """``raw`` parsed by ``model``; an error names the key and its line (``yaml_at``: where the entry's options
    sit in the file, when not at ``at``)."""
    from taskfit.taskfile import _line_of

    try:
        return (model or AnyOptions).model_validate(raw)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        where = f"{at[0]}[{at[1]}]" + "".join(f".{p}" for p in loc)
        raise TaskfitError(f"{where}: {problems(e)} (options of {owner})", file=str(task.path),
                           line=_line_of(root, (*(yaml_at or at), *loc)), field=where) from None


def _named_entry(root: yaml.Node | None, at: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where an entry's options are written: under its name in the shorthand ``- few_shot: {k: 2}``."""
    node = root
    for part in at:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return at
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1 and node.value[0][0].value != "name":
        return (*at, node.value[0][0].value)
    return at


def _known(names: list[str], name: str, kind: str, at: tuple[Any, ...], task: Any, root: yaml.Node | None) -> None:
    if name not in names:
        from taskfit.taskfile import _line_of

        where = f"{at[0]}[{at[1]}]" + "".join(f".{p}" for p in at[2:])
        raise TaskfitError(f"{where}: unknown {kind} {name!r}; known {kind}s: {', '.join(names)}",
                           file=str(task.path), line=_line_of(root, at), field=where)


def stored_model(config: dict[str, Any]) -> Any:
    """A run's stored model entry as a ``ModelSpec``. The entry was valid when the run was made; keys its
    backend no longer declares (an older version stored every backend's keys in every entry) are dropped."""
    from taskfit.backends import backends
    from taskfit.taskfile import ModelSpec

    spec = ModelSpec.model_validate(config)
    return ModelSpec.model_validate(_declared(spec, backends.options(spec.backend) if spec.backend in
                                              backends.names() else None))


def stored_strategy(config: dict[str, Any]) -> Any:
    """A run's stored strategy row as a ``StrategySpec``, with keys its strategy no longer declares dropped."""
    from taskfit.strategies import strategies
    from taskfit.taskfile import StrategySpec

    spec = StrategySpec.model_validate(config)
    return StrategySpec.model_validate(_declared(spec, strategies.options(spec.name) if spec.name in
                                                 strategies.names() else None))


def _declared(spec: BaseModel, options: type[BaseModel] | None) -> dict[str, Any]:
    common = spec.model_dump(exclude_unset=True, exclude=set(spec.model_extra or {}))
    if options is None or options.model_config.get("extra") == "allow":
        return {**common, **(spec.model_extra or {})}
    return {**common, **{k: v for k, v in (spec.model_extra or {}).items() if k in options.model_fields}}
