"""The Jinja2 sandbox that task-file templates render in: no unsafe attribute access, bounded work and output.

jinja2's ``ImmutableSandboxedEnvironment`` refuses private and internal attributes (``__class__``,
``__globals__``, ``gi_frame``, ...) and methods that modify lists, dicts and sets. On top of it this
environment refuses, before the value is built, each operation that could make a value larger than the
render's character limit: ``*`` of a string or list, ``+`` and ``~`` of strings or lists, ``**`` and ``*``
of huge integers, widths in ``%`` and ``str.format`` templates, the padding and joining string methods and
filters; it counts loop iterations across a render, and stops the output at the limit. A refusal is a
``SecurityError`` (``TemplateLimitError``), like the sandbox's own.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_LOOP_STEPS = 100_000  # loop iterations in one render, every loop together (jinja2's MAX_RANGE for one range)
MAX_INT_BITS = 10_000  # integers ``*`` and ``**`` may make: about 3,000 digits


class TemplateLimitError(SecurityError):
    """A render would go past a size or work limit."""


@dataclass
class _Render:
    """The limits and counters of one render."""

    max_chars: int
    loop_steps: int = 0


# The render in progress in this thread or task; set by ``render_bounded`` for the length of one render,
# read by the operator and call hooks, which jinja2 gives no per-render argument to.
_current: ContextVar[_Render | None] = ContextVar("taskfit_template_render", default=None)


def _limit() -> int:
    state = _current.get()
    # outside a render (jinja2 folding constants while it compiles) nothing may grow: the refusal makes
    # jinja2 leave the expression to the render, where the render's limit applies
    return state.max_chars if state else 0


def _refuse(what: str, size: float) -> None:
    limit = _limit()
    if size > limit:
        raise TemplateLimitError(f"{what} would make {size:,.0f} characters, over the limit of {limit:,}")


def _size(value: Any, depth: int = 0) -> int:
    """About how many characters ``value`` prints as (containers: their items' sizes and one per item)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    if depth > 50:  # deeper nesting than any template builds; count it as one
        return 1
    if isinstance(value, dict):
        return len(value) + sum(_size(k, depth + 1) + _size(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) + sum(_size(x, depth + 1) for x in value)
    return 1


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_binop(op: str, left: Any, right: Any) -> None:
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (left, right))
    if op == "*" and ints and _bits(abs(left)) + _bits(abs(right)) > MAX_INT_BITS:
        raise TemplateLimitError(f"'*' would make an integer of more than {MAX_INT_BITS:,} bits")
    if op == "*" and not ints:
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
            _refuse("'*'", _size(seq) * max(times, 0))
    if op == "**" and ints and abs(left) > 1 and right > 0:
        bits = right * math.log2(abs(left))
        if bits > MAX_INT_BITS:
            raise TemplateLimitError(f"'**' would make an integer of about {bits:,.0f} bits, "
                                     f"over the limit of {MAX_INT_BITS:,}")
    if op == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _refuse("'+'", _size(left) + _size(right))
    if op == "%" and isinstance(left, str):
        _check_printf(left, right if isinstance(right, tuple) else (right,))


# a printf conversion: %(name)-08.3f; width and precision are numbers or '*' (taken from the arguments)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_printf(template: str, args: Iterable[Any]) -> None:
    for width, precision in _PRINTF.findall(template):
        for number in (width, precision):
            if number.isdigit():
                _refuse("a '%' width", int(number))
            elif number == "*":
                _refuse("a '%*' width", max((_int(a) for a in args), default=0))


def _check_format(template: str, args: Iterable[Any]) -> None:
    """Widths in a ``str.format`` template's specs, and arguments that nested fields may take as widths."""
    pending, nested = [template], False
    while pending:
        for _, _, spec, _ in string.Formatter().parse(pending.pop()):
            if spec:
                _refuse("a format width", max((int(n) for n in re.findall(r"\d+", spec)), default=0))
                if "{" in spec:
                    nested = True
                    pending.append(spec)
    if nested:
        _refuse("a format width", max((_int(a) for a in args), default=0))


def _replaced_size(s: Any, old: Any, new: Any) -> int:
    s, old, new = str(s), str(old), str(new)
    return len(s) + (s.count(old) if old else len(s) + 1) * len(new)


def _joined_size(items: list[Any], sep: Any) -> int:
    return sum(len(str(x)) for x in items) + len(str(sep)) * max(len(items) - 1, 0)


# Estimates of what the growing str methods and filters return, from their arguments (as jinja2 passes them:
# the subject first). A join's iterable is a list by the time an estimate sees it.
_ESTIMATES: dict[str, Callable[..., float]] = {
    "center": lambda s, width=80, *_: max(len(str(s)), _int(width)),
    "ljust": lambda s, width, *_: max(len(str(s)), _int(width)),
    "rjust": lambda s, width, *_: max(len(str(s)), _int(width)),
    "zfill": lambda s, width: max(len(str(s)), _int(width)),
    "expandtabs": lambda s, tabsize=8: len(str(s)) + str(s).count("\t") * _int(tabsize),
    "replace": lambda s, old, new, *_: _replaced_size(s, old, new),
    "indent": lambda s, width=4, *_: len(str(s)) + (str(s).count("\n") + 1) * (
        len(width) if isinstance(width, str) else _int(width)),
    "wordwrap": lambda s, width=79, _b=True, wrapstring=None, *_: len(str(s)) + (
        len(str(s)) // max(_int(width), 1) + 1) * len(wrapstring or "\n"),
    "tojson": lambda value, indent=None: _size(value) * (1 + _int(indent)),
    "batch": lambda value, linecount, fill_with=None: _int(linecount) * _size(fill_with) if fill_with else 0,
    "slice": lambda value, slices, fill_with=None: _int(slices),
}


def _estimate(name: str, args: list[Any], kwargs: dict[str, Any], label: str) -> None:
    estimate = _ESTIMATES.get(name)
    if estimate is None:
        return
    try:
        size = estimate(*args, **kwargs)
    except TypeError:  # arguments the function itself will refuse
        return
    _refuse(label, size)


def _check_result(label: str, value: Any) -> Any:
    if isinstance(value, str):
        _refuse(label, len(value))
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its output estimated before it runs and measured after."""
    # the context, eval context or environment jinja2 passes first to a filter marked with pass_*
    skip = 1 if getattr(func, "jinja_pass_arg", None) else 0
    label = f"the filter {name}"

    @wraps(func)  # keeps jinja2's pass_context / pass_environment mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        head, rest = list(args[:skip]), list(args[skip:])
        if name == "join" and rest:
            rest[0] = list(rest[0])  # materialised once, for the estimate and the join
            sep = rest[1] if len(rest) > 1 else kwargs.get("d", "")
            _refuse(label, _joined_size(rest[0], sep))
        elif name == "format" and rest:
            _check_printf(str(rest[0]), rest[1:])
        else:
            _estimate(name, rest, kwargs, label)
        return _check_result(label, func(*head, *rest, **kwargs))

    return bounded


class _BoundLoopsAndConcats(NodeTransformer):
    """Routes every ``for`` loop's iterable and every ``~`` through the environment's bounded versions."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _environment_call("bounded_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _environment_call("bounded_concat", node.nodes, node.lineno)


def _environment_call(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    # an environment attribute, not a template name: a template cannot rebind it
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), args, [], None, None, lineno=lineno)


def _as_json_text(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """A sandboxed, immutable Jinja2 environment whose renders stay within a character and a loop limit."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; a prompt has no use for it
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        # the default input template shows a JSON object or list field as the JSON the data holds, not as
        # Python's repr of it ({'a': None}); bounded like the other filters
        self.filters["as_json_text"] = _bounded_filter("tojson", _as_json_text)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _BoundLoopsAndConcats().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # jinja2 wraps str.format in its own safe formatter; the wrapper keeps the method as __wrapped__
        method = getattr(__obj, "__wrapped__", __obj) if inspect.isfunction(__obj) else __obj
        subject = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(subject, str):
            if name == "join" and args:
                args = (list(args[0]), *args[1:])
                _refuse("join()", _joined_size(args[0], subject))
            elif name in ("format", "format_map"):
                _check_format(subject, [*args, *kwargs.values(), *(
                    args[0].values() if name == "format_map" and args and isinstance(args[0], dict) else ())])
            else:
                _estimate(name, [subject, *args], kwargs, f"{name}()")
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_result(f"{name or 'a call'}()", result)

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        state = _current.get() or _Render(0)
        for item in iterable:
            state.loop_steps += 1
            if state.loop_steps > MAX_LOOP_STEPS:
                raise TemplateLimitError(f"loops ran more than {MAX_LOOP_STEPS:,} iterations")
            yield item

    def bounded_concat(self, *parts: Any) -> str:
        texts = [str(p) for p in parts]
        _refuse("'~'", sum(len(t) for t in texts))
        return "".join(texts)


def render_bounded(template: Any, variables: dict[str, Any], max_chars: int) -> str:
    """``template`` rendered with ``variables``; TemplateLimitError as soon as it passes ``max_chars``."""
    token = _current.set(_Render(max_chars))
    try:
        out, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > max_chars:
                raise TemplateLimitError(f"the output would pass the limit of {max_chars:,} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _current.reset(token)


# Missing names raise (StrictUndefined): a template that names a field a row lacks is an error, not a blank.
environment = BoundedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
