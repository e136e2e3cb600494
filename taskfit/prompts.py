"""Prompt rendering: sandboxed Jinja2 templates over a row's fields, and the structured template.

User data is only ever passed as template *variables*; it is never compiled as a template, so a review
that contains ``{{ 7*7 }}`` is shown verbatim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from taskfit.backends import Message
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.taskfile import Task

_env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
# the default input template shows a JSON object or list field as the JSON the data holds, not as Python's
# repr of it ({'a': None})
_env.filters["as_json_text"] = lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v


@lru_cache(maxsize=256)
def _compile(source: str):
    return _env.from_string(source)


def check_template(source: str, fields: set[str], where: str, task_path: str | None = None) -> set[str]:
    """Fail early when ``source`` is not valid Jinja2 or references a field rows do not have; returns the
    fields it uses."""
    try:
        names = meta.find_undeclared_variables(_env.parse(source))
    except TemplateSyntaxError as e:
        raise TaskfitError(f"{where}: template syntax error on its line {e.lineno}: {e.message}",
                           file=task_path, field=where) from None
    missing = sorted(names - fields)
    if missing:
        raise TaskfitError(f"{where}: template references field(s) {', '.join(repr(m) for m in missing)} "
                           f"that the data does not have (fields: {', '.join(sorted(fields))})",
                           file=task_path, field=where)
    return names


def render(source: str, variables: dict[str, Any], where: str = "template") -> str:
    try:
        return _compile(source).render(**variables)
    except UndefinedError as e:
        raise TaskfitError(f"{where}: {e.message}", field=where) from None


@dataclass
class PromptParts:
    """The pieces every strategy assembles prompts from, resolved from the task file."""

    system: str | None
    instruction: str
    output_format: str
    answer_prefix: str
    input_template: str
    response_prefix: str = ""


def prompt_parts(task: Task) -> PromptParts:
    c = task.config
    p = c.prompt
    output_format = p.output_format
    if output_format is None:
        output_format = f"Answer with exactly one of: {', '.join(c.labels)}." if c.labels else ""
    input_template = p.input_template or "\n".join(
        f"{name.replace('_', ' ').capitalize()}: {{{{ {name} | as_json_text }}}}" for name in c.inputs)
    return PromptParts(p.system, p.instruction, output_format, p.answer_prefix, input_template, p.response_prefix)


def validate_templates(task: Task, fields: set[str]) -> set[str]:
    """Check every template the task file declares against the fields its rows have; returns the fields
    they use."""
    c = task.config
    parts = prompt_parts(task)
    where = str(task.path)
    used = check_template(parts.input_template, fields, "prompt.input_template", where)
    used |= check_template(parts.instruction, fields, "prompt.instruction", where)
    if parts.system:
        used |= check_template(parts.system, fields, "prompt.system", where)
    for i, s in enumerate(c.strategies):
        for key, value in s.options.items():
            if isinstance(value, str) and "{{" in value:
                used |= check_template(value, fields, f"strategies[{i}].{key}", where)
    return used


def render_input(parts: PromptParts, ex: Example) -> str:
    return render(parts.input_template, ex.fields, "prompt.input_template")


def user_turn(parts: PromptParts, ex: Example, *, with_instruction: bool = True) -> str:
    """The user message for one example: instruction, input, output format, answer prefix."""
    chunks = []
    if with_instruction and parts.instruction:
        chunks.append(render(parts.instruction, ex.fields, "prompt.instruction"))
    chunks.append(render_input(parts, ex))
    if parts.output_format:
        chunks.append(parts.output_format)
    if parts.answer_prefix:
        chunks.append(parts.answer_prefix)
    return "\n\n".join(chunks)


def messages(system: str | None, turns: list[tuple[str, str]], response_prefix: str = "") -> tuple[Message, ...]:
    """Chat messages; a ``response_prefix`` becomes a final assistant turn that the model continues."""
    out: list[Message] = [{"role": "system", "content": system}] if system else []
    out += [{"role": role, "content": text} for role, text in turns]
    if response_prefix:
        out.append({"role": "assistant", "content": response_prefix})
    return tuple(out)


# The structured template from the prompt-engineering literature: each section optional, shown in this
# order, delimited by tags that small models reliably keep apart from the input.
STRUCTURED_SECTIONS = ("objective", "instructions", "constraints", "context", "output_format", "examples", "recap")


def structured_prompt(sections: dict[str, str | list[str] | None]) -> str:
    """Render the sections that are present, in the canonical order."""
    out = []
    for name in STRUCTURED_SECTIONS:
        value = sections.get(name)
        if not value:
            continue
        if isinstance(value, list):
            value = "\n".join(f"{i}. {item}" for i, item in enumerate(value, start=1))
        tag = name.upper()
        out.append(f"<{tag}>\n{value.strip()}\n</{tag}>")
    return "\n".join(out)
