"""Prompt rendering: sandboxed Jinja2 templates over a row's fields, and the structured template.

User data is only ever passed as template *variables*; it is never compiled as a template, so a review
that contains ``{{ 7*7 }}`` is shown verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError

from taskfit.backends import Message
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.taskfile import MAX_TEMPLATE_CHARS, Task
from taskfit.template_sandbox import environment, render_bounded

_env = environment
# What a template's own code may raise while it renders (`{{ 1 / 0 }}`, `{{ text + 1 }}`): the task file's
# fault, reported as such. SecurityError (an unsafe attribute, a size or loop limit) is a TemplateError.
TEMPLATE_FAULTS = (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError)


@lru_cache(maxsize=256)
def _compile(source: str):
    return _env.from_string(source)


def check_template(source: str, fields: set[str] | None, where: str, task_path: str | None = None,
                   line: int | None = None) -> set[str]:
    """Fail early when ``source`` is not valid Jinja2, reads a private attribute (which the sandbox refuses
    on every row) or references a field rows do not have (``fields=None``: names are not checked); returns the
    names it uses."""
    try:
        tree = _env.parse(source)
    except TemplateSyntaxError as e:
        raise TaskfitError(f"{where}: template syntax error on its line {e.lineno}: {e.message}",
                           file=task_path, line=line, field=where) from None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(attr, str) and attr.startswith("_"):
            raise TaskfitError(f"{where}: the template reads {attr!r} on its line {node.lineno}, an unsafe "
                               "attribute the template sandbox refuses", file=task_path, line=line, field=where)
    missing = sorted(meta.find_undeclared_variables(tree) - fields) if fields is not None else []
    if missing:
        raise TaskfitError(f"{where}: template references field(s) {', '.join(repr(m) for m in missing)} "
                           f"that the data does not have (fields: {', '.join(sorted(fields))})",
                           file=task_path, line=line, field=where)
    return meta.find_undeclared_variables(tree)


def render(source: str, variables: dict[str, Any], where: str = "template", *, row: str | None = None,
           max_chars: int = MAX_TEMPLATE_CHARS) -> str:
    """``source`` rendered over ``variables`` in the template sandbox; what goes wrong in the template is a
    TaskfitError naming ``where`` and the ``row`` (e.g. ``data/test.jsonl:7``)."""
    try:
        return render_bounded(_compile(source), variables, max_chars)
    except TEMPLATE_FAULTS as e:
        what = "refused by the template sandbox" if isinstance(e, SecurityError) else "the template failed"
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        on_row = f" on row {row}" if row else ""
        raise TaskfitError(f"{where}: {what}{on_row}: {message}", field=where) from None


@dataclass
class PromptParts:
    """The pieces every strategy assembles prompts from, resolved from the task file."""

    system: str | None
    instruction: str
    output_format: str
    answer_prefix: str
    input_template: str
    response_prefix: str = ""
    max_chars: int = MAX_TEMPLATE_CHARS  # the most one rendered template may produce


def prompt_parts(task: Task) -> PromptParts:
    c = task.config
    p = c.prompt
    output_format = p.output_format
    if output_format is None:
        output_format = f"Answer with exactly one of: {', '.join(c.labels)}." if c.labels else ""
    input_template = p.input_template or "\n".join(
        f"{name.replace('_', ' ').capitalize()}: {{{{ {name} | as_json_text }}}}" for name in c.inputs)
    return PromptParts(p.system, p.instruction, output_format, p.answer_prefix, input_template, p.response_prefix,
                       p.max_chars)


def validate_templates(task: Task, fields: set[str], sample: Example | None = None) -> set[str]:
    """Check every template the task file declares against the fields its rows have, then render each once
    over ``sample`` (a row of the data), so an unsafe access or an oversized output is found before any call;
    returns the fields the templates that render over a row use."""
    used: set[str] = set()
    for source, where, loc, of_rows in _declared_templates(task):
        line = task.line_of(*loc)
        names = check_template(source, fields if of_rows else None, where, str(task.path), line)
        if of_rows:
            used |= names
        if sample is not None:
            # names the sample row lacks, or that a strategy gives its template (a chain's `steps`), are blanks
            others = {name: ChainableUndefined(name=name)
                      for name in meta.find_undeclared_variables(_env.parse(source)) - set(sample.fields)}
            try:
                render(source, {**others, **sample.fields}, where, row=sample.source,
                       max_chars=task.config.prompt.max_chars)
            except TaskfitError as e:
                raise TaskfitError(str(e), file=str(task.path), line=line, field=where) from None
    return used


def _declared_templates(task: Task) -> list[tuple[str, str, tuple, bool]]:
    """(template, its key, where it sits in the file, whether it renders over a row's fields alone) for every
    template of the task file: the prompt's, and any strategy option that holds Jinja2, however nested (a
    chain's steps render over the row and the earlier steps' outputs)."""
    parts = prompt_parts(task)
    p = ("prompt",)
    out = [(parts.input_template, "prompt.input_template", (*p, "input_template"), True),
           (parts.instruction, "prompt.instruction", (*p, "instruction"), True)]
    if parts.system:
        out.append((parts.system, "prompt.system", (*p, "system"), True))
    pending: list[tuple[tuple, Any]] = [(("strategies", i), s.options) for i, s in enumerate(task.config.strategies)]
    while pending:
        loc, value = pending.pop(0)
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
            out.append((value, where, loc, len(loc) == 3))
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        pending += [((*loc, k), v) for k, v in items]
    return out


def render_row(parts: PromptParts, source: str, ex: Example, where: str) -> str:
    """``source`` over one example's fields within the task's template limit; an error names ``where`` (the
    template's key) and the row."""
    return render(source, ex.fields, where, row=ex.source, max_chars=parts.max_chars)


def render_input(parts: PromptParts, ex: Example) -> str:
    return render_row(parts, parts.input_template, ex, "prompt.input_template")


def user_turn(parts: PromptParts, ex: Example, *, with_instruction: bool = True) -> str:
    """The user message for one example: instruction, input, output format, answer prefix."""
    chunks = []
    if with_instruction and parts.instruction:
        chunks.append(render_row(parts, parts.instruction, ex, "prompt.instruction"))
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
