"""Write docs/taskfile.md, the task-file reference, from the pydantic models' field descriptions."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from taskfit.costs import CostsConfig
from taskfit.curve import CurveSpec
from taskfit.distill.spec import DistillSpec, SyntheticSpec
from taskfit.serve.config import MemoryConfig, RetentionConfig, ServeConfig, VettingConfig, VettingRules
from taskfit.taskfile import (
    NOT_IDENTITY,
    DataConfig,
    ModelSpec,
    ParseConfig,
    PromptConfig,
    SplitRatios,
    TaskConfig,
)
from taskfit.tuning.spec import TuneSpec

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [("Top level", TaskConfig, ""), ("data", DataConfig, "data."), ("data.split", SplitRatios, "data.split."),
            ("prompt", PromptConfig, "prompt."), ("parse", ParseConfig, "parse."), ("models[]", ModelSpec, "models[]."),
            ("tuning[]", TuneSpec, "tuning[]."), ("distill[]", DistillSpec, "distill[]."),
            ("distill[].synthetic", SyntheticSpec, "distill[].synthetic."), ("curve[]", CurveSpec, "curve[]."),
            ("costs", CostsConfig, "costs."),
            ("serve", ServeConfig, "serve."),
            ("serve.vetting", VettingConfig, "serve.vetting."),
            ("serve.vetting.input / output", VettingRules, "serve.vetting.input."),
            ("serve.memory", MemoryConfig, "serve.memory."),
            ("serve.retention", RetentionConfig, "serve.retention.")]


def _type(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    for model in (DataConfig, PromptConfig, ParseConfig, SplitRatios):
        text = text.replace(f"taskfit.taskfile.{model.__name__}", model.__name__)
    return text.replace("taskfit.taskfile.", "").replace("taskfit.serve.config.", "").replace(
        "taskfit.tuning.spec.", "").replace("taskfit.distill.spec.", "").replace("taskfit.costs.", "").replace(
        "taskfit.curve.", "")


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return ", ".join(getattr(v, "name", None) or v.label() for v in value)
        return repr(value) if not isinstance(value, BaseModel) else "see below"
    return repr(field.default)


def render() -> str:
    out = [
        "# Task file reference",
        "",
        "A task file is YAML. It is validated when loaded: an unknown key, a wrong type, an unknown metric, strategy",
        "or backend, a missing data field or a template that names a field the data lacks stops the run before any",
        "model call, with the file, line and key in the message. This page is generated from the code",
        "(`python scripts/gen_taskfile_doc.py`); a test keeps it current.",
        "",
        "## Example",
        "",
        "```yaml",
        (ROOT / "examples/sst2/task.yaml").read_text().rstrip(),
        "```",
        "",
        "Shorthands: a metric or strategy may be a bare name (`accuracy`) or a one-key mapping",
        "(`{fuzzy: {threshold: 0.8}}`); a model may be a bare path or `bundled`. Strategy options are the keys",
        "next to `name` (see `taskfit strategies` and the strategies section below).",
        "",
        "## Run identity",
        "",
        "A run is identified by the task's validated configuration (not the file's text), the data, its own",
        "strategy and model entry, the split and the limit; running the same settings again reuses the finished",
        "run (no model call, no new run record). Comments, formatting and key order never count, nor do these",
        "top-level keys, which change no prediction or have an identity of their own: "
        + ", ".join(f"`{k}`" for k in sorted(NOT_IDENTITY)) + "; nor a model entry's `price_per_hour`.",
        "Every other key counts: editing the instruction, a template, the labels, a metric or the data makes new",
        "runs. Runs stored when the identity was the file's text are found by that text and then re-keyed.",
        "",
    ]
    for title, model, prefix in SECTIONS:
        out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            if name in ("metrics", "strategies", "models") and model is TaskConfig:
                desc += " See below." if name == "models" else ""
            typ = _type(field.annotation).replace("|", "\\|")
            out.append(f"| `{prefix}{name}` | {typ} | `{_default(field)}` | {desc} |")
        out.append("")
    out += [
        "## metrics[]",
        "",
        "`name` plus options: `exact_match`/`accuracy` (`normalize`, `first_segment`), `contains`, `regex`",
        "(`pattern`, `flags`), `numeric` (`tolerance`), `token_f1`, `fuzzy` (`threshold`, `normalize`), `json_valid`,",
        "`json_match` (`fields`), `custom` (`function: package.module:func`, `binary`). The first metric is the",
        "leaderboard score. `taskfit metrics` lists them.",
        "",
        "## strategies[]",
        "",
        "`name` (a registered strategy), optional `id` (the row name), and the strategy's own options, listed",
        "below from the code. `taskfit strategies` prints the same one-line descriptions. Each strategy declares",
        "its options as an `Options` model, checked when the task is loaded: an unknown or invalid key is an",
        "error naming the file, line and key. A strategy a plugin package registers (entry-point group",
        "`taskfit.strategies`) is checked against its own `Options` the same way.",
        "",
    ]
    out += _strategy_sections()
    out += [
        "## models[] options by backend",
        "",
        "Next to the keys of every model entry (`models[]` above), each backend takes the options of its own",
        "`Options` model, checked when the task is loaded. A backend a plugin package registers (entry-point group",
        "`taskfit.backends`) declares its own the same way.",
        "",
    ]
    out += _backend_sections()
    out += [
        "## tuning[] options by method",
        "",
        "Next to the keys of every tuning row (`tuning[]` above), each method takes the options of its own `Options`",
        "model, checked when the task is loaded (a method a plugin registers in `taskfit.tuning_methods` likewise).",
        "",
    ]
    out += _method_sections()
    out += [
        "## tuning[] options by objective",
        "",
        "An objective may own keys of a tuning row too (its `Options`); they are checked when the task is loaded,",
        "and are an error on a row of another objective.",
        "",
    ]
    out += _objective_sections()
    return "\n".join(out)


def _objective_sections() -> list[str]:
    """One table per objective that owns keys of a tuning row, from its ``Options`` model."""
    from taskfit.tuning.objectives import OWNERS, options_model

    out: list[str] = []
    for name in OWNERS:
        model = options_model(name)
        out += [f"### {name}", "", (model.__doc__ or "").strip(), "", *_options_table(model), ""]
    return out


def _method_sections() -> list[str]:
    """One table per built-in tuning method, from the ``Options`` model its module declares."""
    from taskfit.tuning.methods import BUILTINS, methods

    out: list[str] = []
    for name in BUILTINS:
        model = methods.options(name)
        out += [f"### {name}", "", methods.get(name).DESCRIPTION, ""]
        out += [*_options_table(model), ""] if model.model_fields else ["No options.", ""]
    return out


def _backend_sections() -> list[str]:
    """One table per built-in backend, from the ``Options`` model its module declares."""
    from taskfit.backends import BUILTINS, backends

    out: list[str] = []
    for name in BUILTINS:
        model = backends.options(name)
        out += [f"### {name}", "", (model.__doc__ or "").strip(), ""]
        out += [*_options_table(model), ""]
    return out


def _options_table(model: type[BaseModel]) -> list[str]:
    out = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for key, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        default = _default(field).replace("\n", "\\n").replace("|", "\\|")
        if len(default) > 60:
            default = default[:57] + "..."
        typ = _type(field.annotation).replace("|", "\\|")
        out.append(f"| `{key}` | {typ} | `{default}` | {desc} |")
    return out


def _strategy_sections() -> list[str]:
    """One table per registered strategy, from the pydantic options model its module defines."""
    import importlib
    import inspect

    from taskfit.strategies import BUILTINS

    out: list[str] = []
    seen: set[str] = set()
    for name, spec in BUILTINS.items():
        module = importlib.import_module(spec.partition(":")[0])
        alias = module.__name__ in seen
        seen.add(module.__name__)
        out += [f"### {name}", "", getattr(module, "DESCRIPTION", ""), ""]
        if alias:
            out += [f"Same options as the strategy in `{module.__name__}` above.", ""]
            continue
        models = list({id(obj): obj for _, obj in inspect.getmembers(module, inspect.isclass)
                       if issubclass(obj, BaseModel) and obj.__module__ == module.__name__}.values())
        models.sort(key=lambda m: m is not module.Options)  # the options first, then nested shapes
        for model in models:
            if len(models) > 1:
                out += [f"`{model.__name__}`:", ""]
            out += _options_table(model)
            if model.model_config.get("extra") == "allow":
                out.append("| *other keys* | | | passed to the base strategy |")
            out.append("")
    return out


if __name__ == "__main__":
    target = ROOT / "docs/taskfile.md"
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if target.exists() and target.read_text() == text else 1)
    target.write_text(text)
    print(f"wrote {target}")
