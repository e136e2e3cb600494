"""Tools a model may call: a name, a description, a JSON schema of the arguments, and a Python function.

Built-ins register by name like strategies do (third-party tools through the ``taskfit.tools`` entry-point
group); a task file may also name any importable function as ``{function: "pkg.module:func"}``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskfit.errors import TaskfitError
from taskfit.registry import Registry

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?)\s*:\s*$")


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    function: Callable[..., Any]

    @property
    def required(self) -> list[str]:
        return list(self.parameters.get("required", []))

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling form sent as a request's ``tools``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolResult:
    output: str  # what the model is shown; an "Error: ..." line when the call failed
    error: str | None = None


def tool_from_function(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                       parameters: dict[str, Any] | None = None) -> Tool:
    """A tool from a plain function: the schema from its signature and type hints, the description from
    its docstring (argument descriptions from a Google-style ``Args:`` section)."""
    doc = inspect.getdoc(fn) or ""
    summary, arg_docs = _split_docstring(doc)
    return Tool(name=name or fn.__name__, description=description if description is not None else summary,
                parameters=parameters if parameters is not None else _schema(fn, arg_docs), function=fn)


def _schema(fn: Callable[..., Any], arg_docs: dict[str, str]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped parameters
        hints = {}
    props: dict[str, Any] = {}
    required = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        prop: dict[str, Any] = {}
        json_type = _json_type(hints.get(p.name))
        if json_type:
            prop["type"] = json_type
        if p.name in arg_docs:
            prop["description"] = arg_docs[p.name]
        if p.default is p.empty:
            required.append(p.name)
        elif isinstance(p.default, (int, float, str, bool)) or p.default is None:
            prop["default"] = p.default
        props[p.name] = prop
    return {"type": "object", "properties": props, "required": required}


def _json_type(hint: Any) -> str | None:
    """JSON schema type of a hint; ``X | None`` is X; None for hints JSON schema has no simple type for."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return _JSON_TYPES.get(typing.get_origin(hint) or hint)


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(text before the first section, {arg: description} from an ``Args:`` section)."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section = None
    last = None
    for line in doc.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            continue
        if section is None:
            summary.append(line.strip())
        elif section in ("args", "arguments", "parameters"):
            am = re.match(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if am:
                last = am.group(1).lstrip("*")
                args[last] = am.group(2).strip()
            elif last and line.strip():
                args[last] = f"{args[last]} {line.strip()}"
    return " ".join(s for s in summary if s), args


# -- built-in tools ------------------------------------------------------------------------------

_MAX_EXPRESSION_CHARS = 500
_MAX_RESULT_DIGITS = 1000  # bounds the work of ** and *: "9**9**9" must fail fast, not hang the run
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: Numbers with + - * / // % ** and parentheses, e.g. "(12 + 3) * 4 / 5".
    """
    text = expression.strip().strip("`'\"").rstrip("=").strip()
    if len(text) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    # spellings models often use: 2^3 for a power, x and ÷ signs, 1,000 for a thousand
    text = text.replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    return _format_number(_eval(tree.body))


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):  # (-8) ** 0.5
            raise ValueError("the result is not a real number")
        if isinstance(value, int) and value.bit_length() > _MAX_RESULT_DIGITS * 3.33:
            raise ValueError(f"result has more than {_MAX_RESULT_DIGITS} digits")
        return value
    if isinstance(node, ast.Name):
        raise ValueError(f"names are not allowed ({node.id!r}): use numbers only")
    if isinstance(node, ast.Call):
        raise ValueError("function calls are not allowed: use numbers and + - * / // % ** only")
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def _check_power(base: int | float, exponent: int | float) -> None:
    if abs(exponent) > 10_000:
        raise ValueError("exponent too large")
    if base not in (0, 1, -1) and abs(exponent) * math.log10(abs(base)) > _MAX_RESULT_DIGITS:
        raise ValueError(f"result has more than {_MAX_RESULT_DIGITS} digits")


def _format_number(value: int | float) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


# canned readings for the demo tool: (celsius, conditions); multiples of 5 so fahrenheit is a whole number
_WEATHER = {
    "paris": (20, "sunny"), "london": (15, "cloudy"), "tokyo": (25, "humid"), "new york": (10, "rainy"),
    "san francisco": (15, "foggy"), "berlin": (5, "overcast"), "sydney": (30, "sunny"), "cairo": (35, "clear"),
    "moscow": (-10, "snowing"), "mumbai": (30, "monsoon rain"), "toronto": (0, "windy"), "rome": (25, "clear"),
}
_CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "clear", "overcast"]


def get_current_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location (demo data: fixed readings per city, no network).

    Args:
        location: The city, e.g. "Paris" or "San Francisco, CA".
        unit: "celsius" or "fahrenheit".
    """
    city = location.split(",")[0].strip()
    key = " ".join(city.lower().split())
    if not key:
        raise ValueError("location is empty")
    u = unit.strip().lower()
    u = {"c": "celsius", "f": "fahrenheit"}.get(u, u)
    if u not in ("celsius", "fahrenheit"):
        raise ValueError(f"unit must be 'celsius' or 'fahrenheit', not {unit!r}")
    if key in _WEATHER:
        celsius, conditions = _WEATHER[key]
    else:  # any other place: a stable reading derived from its name
        h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        celsius, conditions = 5 * (h % 8) - 5, _CONDITIONS[(h // 8) % len(_CONDITIONS)]
    temperature = celsius if u == "celsius" else round(celsius * 9 / 5 + 32)
    return json.dumps({"location": city.title(), "temperature": temperature, "unit": u, "conditions": conditions})


BUILTINS = {
    "calculator": "taskfit.tools:calculator",
    "get_current_weather": "taskfit.tools:get_current_weather",
}

tools = Registry("tool", BUILTINS)


# -- loading and calling -------------------------------------------------------------------------

class ToolSpec(BaseModel):
    """A tool named in a task file by the function that implements it."""

    model_config = ConfigDict(extra="forbid")
    function: str = Field(description='The function as "pkg.module:func".')
    name: str | None = Field(None, description="Name shown to the model; default the function's name.")
    description: str | None = Field(None, description="What the tool does; default the docstring.")
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments; default from the signature.")


def load_tool(spec: str | dict[str, Any]) -> Tool:
    """A built-in (or plugin) tool by name, a "pkg.module:func" string, or a ``ToolSpec`` mapping."""
    if isinstance(spec, str) and ":" not in spec:
        return tool_from_function(tools.get(spec), name=spec)
    if isinstance(spec, str):
        spec = {"function": spec}
    try:
        s = ToolSpec.model_validate(spec)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'tool'}: {err['msg']}" for err in e.errors())
        raise TaskfitError(f"tool {spec!r}: {msgs}", field="tools") from None
    module, _, attr = s.function.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise TaskfitError(f"tool {s.function!r}: cannot import it ({type(e).__name__}: {e})", field="tools") from None
    if not callable(fn):
        raise TaskfitError(f"tool {s.function!r} is not a function", field="tools")
    return tool_from_function(fn, name=s.name, description=s.description, parameters=s.parameters)


def execute(tool: Tool, arguments: dict[str, Any]) -> ToolResult:
    """Check the arguments against the schema and run the tool; failures become an error result."""
    if not isinstance(arguments, dict):
        return _failed(f"{tool.name} takes a JSON object of arguments, got {arguments!r}")
    props = tool.parameters.get("properties", {})
    missing = [p for p in tool.required if p not in arguments]
    if missing:
        return _failed(f"{tool.name}: missing required argument(s) {', '.join(missing)}")
    takes_any = any(p.kind == p.VAR_KEYWORD for p in _parameters(tool.function))
    unknown = [a for a in arguments if a not in props]
    if unknown and not takes_any:
        return _failed(f"{tool.name}: unknown argument(s) {', '.join(unknown)}; it takes {', '.join(props) or 'none'}")
    try:
        kwargs = {k: _coerce(v, props.get(k, {}).get("type")) for k, v in arguments.items()}
        result = tool.function(**kwargs)
    except Exception as e:  # a tool's failure is an observation for the model, not a crash of the run
        return _failed(f"{tool.name}: {type(e).__name__}: {e}")
    return ToolResult(output=result if isinstance(result, str) else json.dumps(result, default=str))


def call_tool(tool: Tool, arguments: dict[str, Any]) -> str:
    """Run the tool and return what the model is shown: its result, or an "Error: ..." line."""
    return execute(tool, arguments).output


def _failed(message: str) -> ToolResult:
    return ToolResult(output=f"Error: {message}", error=message)


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature
        return []


def _coerce(value: Any, json_type: str | None) -> Any:
    """Numbers and booleans sent as strings ("5", "true"), which small models often do."""
    if not isinstance(value, str):
        if json_type == "number" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    v = value.strip()
    if json_type == "integer":
        return int(v)
    if json_type == "number":
        return float(v)
    if json_type == "boolean" and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return value
