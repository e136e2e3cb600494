"""Running a small untrusted Python program (a model's answer as code) and reading its result.

Two layers. A static check is an allow-list: listed statement and expression types only (no import, class,
with, async), attribute reads only from the public methods and data of numbers, strings, containers,
fractions and ``math`` (a keyword of a class pattern, ``case str(format=f)``, counts as one), no builtin the
child does not provide (``open``, ``eval``, ``getattr``, ``type``, ``vars``, ...), no dunder identifiers, and
``str.format`` only on a literal template whose fields are plain names. What passes runs in a fresh interpreter (``python -I -S`` on this file: no site-packages, no user path)
with only safe builtins, a pre-imported ``math`` and ``Fraction``, an address-space limit (RLIMIT_AS),
no file writes (RLIMIT_FSIZE 0), a CPU limit and a wall-clock alarm; the parent kills it if it overruns.

This module runs as the child too, so it imports nothing outside the standard library.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import re
import signal
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

SAFE_BUILTINS = (
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hex", "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
    "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError", "LookupError", "OverflowError",
    "RuntimeError", "StopIteration", "TypeError", "ValueError", "ZeroDivisionError",
)
# What a program may name besides its own variables: the safe builtins, print and the two pre-imported names.
# Any other builtin (type, getattr, vars, open, object, super, ...) is refused by name unless the program binds
# that name itself; the child's builtins hold only SAFE_BUILTINS either way.
PROVIDED_NAMES = frozenset({*SAFE_BUILTINS, "print", "math", "Fraction"})
BUILTIN_NAMES = frozenset(dir(builtins))
# The attributes a program may read: the public methods and data of the values it can make (numbers, strings,
# bytes, containers, ranges, slices, fractions) and the math module's functions and constants, plus an
# exception's args. Everything else is refused, which covers dunders, frames, generators and code objects
# (RestrictedPython's policy: no underscore names, attribute access only to what is known to be harmless).
_VALUE_TYPES = (str, bytes, int, float, complex, bool, list, tuple, dict, set, frozenset, range, slice, Fraction)
ALLOWED_ATTRIBUTES = frozenset(
    {name for t in _VALUE_TYPES for name in dir(t) if not name.startswith("_")}
    | {name for name in dir(math) if not name.startswith("_")} | {"args"})
# str.format and format_map look up the attributes and items named in their template's fields
# ('{0.__globals__}'): allowed only as `<literal>.format`, whose fields the check reads.
FORMAT_METHODS = frozenset({"format", "format_map"})
_FORMATTER = string.Formatter()
# The statements and expressions a program may contain. Not here: import, class, with, async, await,
# try/except* and type parameters; a node type a newer Python adds is refused until it is listed.
ALLOWED_NODES = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If, ast.Break,
    ast.Continue, ast.Pass, ast.Return, ast.FunctionDef, ast.Lambda, ast.arguments, ast.arg, ast.keyword,
    ast.Try, ast.ExceptHandler, ast.Raise, ast.Assert, ast.Delete, ast.Global, ast.Nonlocal, ast.Yield,
    ast.YieldFrom, ast.BinOp, ast.BoolOp, ast.UnaryOp, ast.Compare, ast.Call, ast.IfExp, ast.NamedExpr, ast.Name,
    ast.Constant, ast.JoinedStr, ast.FormattedValue, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Subscript, ast.Slice, ast.Starred,
    ast.Attribute, ast.Match, ast.match_case, ast.MatchValue, ast.MatchSingleton, ast.MatchSequence,
    ast.MatchStar, ast.MatchMapping, ast.MatchClass, ast.MatchAs, ast.MatchOr,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
)
_NODE_NAMES = {ast.Import: "imports", ast.ImportFrom: "imports", ast.ClassDef: "class definitions",
               ast.With: "with statements", ast.AsyncWith: "with statements"}
GRACE_S = 1.0  # parent-side slack over timeout_s for interpreter start; the child's own alarm fires first
TIMEOUT_EXIT = 124  # the child's exit status when its wall-clock alarm fires
MAX_STDOUT = 10_000  # characters of printed output kept
MAX_VALUE = 1_000  # characters of the result kept


@dataclass
class SandboxResult:
    value: str | None  # the program's result as text; None when it failed or produced nothing
    error: str | None  # why there is no value: a refusal, a crash, a limit
    stdout: str
    elapsed_ms: float


def run_program(code: str, *, timeout_s: float = 2.0, memory_mb: int = 256) -> SandboxResult:
    """Check and run ``code`` in a separate, limited process; problems with the code come back as ``error``.

    The result is the variable ``answer`` if the program sets it, else the last line printed, else the value
    of the final expression statement. ``memory_mb`` bounds the child's whole address space (the bare
    interpreter takes about 15 MB of it).
    """
    start = time.perf_counter()

    def done(value: str | None, error: str | None, stdout: str = "") -> SandboxResult:
        return SandboxResult(value, error, stdout, (time.perf_counter() - start) * 1000)

    refusal = _refusal(code)
    if refusal:
        return done(None, refusal)
    limits = json.dumps({"timeout_s": timeout_s, "memory_mb": memory_mb})
    # env={} and cwd="/": the child inherits no secrets and no working directory worth reading
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), limits],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/")
    try:
        out, err = proc.communicate(code.encode("utf-8", "replace"), timeout=timeout_s + GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return done(None, _time_error(timeout_s))
    if proc.returncode in (TIMEOUT_EXIT, -signal.SIGXCPU):
        return done(None, _time_error(timeout_s))
    try:
        payload = json.loads(out)
    except ValueError:
        stderr = err.decode("utf-8", "replace")
        if "MemoryError" in stderr:
            return done(None, _memory_error(memory_mb))
        last = stderr.strip().splitlines()[-1:] or [""]
        return done(None, f"the program crashed (exit status {proc.returncode}) {last[0]}".strip())
    return done(payload["value"], payload["error"], payload["stdout"])


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON = {"python", "python3", "py"}
_CODE_LINE = re.compile(
    r"^\s*(?:[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*\s*(?:[-+*/%]|//|\*\*)?=(?!=)"  # assignment
    r"|(?:def|for|while|if|return|import|from|try|with)\b"  # a statement keyword
    r"|print\s*\()")


def extract_code(text: str) -> str:
    """The program in a model reply: a ```python block, else any ``` block, else the text from the first
    line that looks like code, cut before trailing prose that does not parse."""
    blocks = [(m.group(1), m.group(2), m.group(0).endswith("```")) for m in _FENCE.finditer(text)]
    block = next((b for b in blocks if b[0].lower() in _PYTHON), None) or next(iter(blocks), None)
    if block:
        _, body, closed = block
        # a reply cut off by max_tokens leaves the fence open and may end mid-statement
        return body.strip("\n") if closed else _parsable_prefix(body.splitlines())
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if _CODE_LINE.match(line)), None)
    if first is None:
        return text.strip()
    return _parsable_prefix(lines[first:])


def _parsable_prefix(lines: list[str]) -> str:
    """The longest run of leading ``lines`` that parses (all of them when none does, to report the error)."""
    for end in range(len(lines), 0, -1):
        source = "\n".join(lines[:end]).strip("\n")
        try:
            ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        if source.strip():
            return source
    return "\n".join(lines).strip("\n")


def _refusal(code: str) -> str | None:
    """Why ``code`` may not run, or None. Checked before any process starts.

    An allow-list: every node must be of a listed type, every attribute read (``x.attr``, or a keyword of a
    class pattern, ``case str(attr=v)``, which binds the attribute without an attribute node) must be a
    listed one, and a name must be the program's own or a provided one.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"syntax error: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        return f"syntax error: {type(e).__name__}: {e}"
    nodes = list(ast.walk(tree))
    bound = {name for node in nodes for name in _bound_names(node)}
    # constructs first, then names, then attributes: `__import__("os").system` is refused for its name
    for check in (_node_problem, lambda node: _name_problem(node, bound), _attribute_problem):
        for node in nodes:
            problem = check(node)
            if problem:
                return f"{problem} (line {getattr(node, 'lineno', '?')})"
    return None


def _node_problem(node: ast.AST) -> str | None:
    if isinstance(node, ALLOWED_NODES):
        return None
    return f"{_NODE_NAMES.get(type(node), f'{type(node).__name__} nodes')} are not allowed"


def _name_problem(node: ast.AST, bound: set[str]) -> str | None:
    """A dunder identifier anywhere, or a builtin the sandbox does not provide (unless the program binds it)."""
    names = _bound_names(node)
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        if node.id in BUILTIN_NAMES and node.id not in PROVIDED_NAMES and node.id not in bound:
            return f"name {node.id!r} is not allowed"
        names = [node.id]
    for name in names:
        if name.startswith("__"):
            return f"name {name!r} is not allowed"
    return None


def _bound_names(node: ast.AST) -> list[str]:
    """The identifiers ``node`` binds or declares (assignment targets, definitions, parameters, captures)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return [node.id]
    if isinstance(node, ast.FunctionDef):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
        return [node.name]
    if isinstance(node, ast.MatchMapping) and node.rest:
        return [node.rest]
    if isinstance(node, ast.Global | ast.Nonlocal):
        return list(node.names)
    if isinstance(node, ast.keyword) and node.arg:  # a keyword argument names a parameter
        return [node.arg]
    return []


def _attribute_problem(node: ast.AST) -> str | None:
    """Why an attribute ``node`` reads, writes or binds is refused, or None."""
    if isinstance(node, ast.MatchClass):
        for attr in node.kwd_attrs:  # `case str(format=f)` binds str.format to f with no attribute node
            if attr not in ALLOWED_ATTRIBUTES or attr in FORMAT_METHODS:
                return f"attribute {attr!r} is not allowed in a class pattern"
        return None
    if not isinstance(node, ast.Attribute):
        return None
    if node.attr not in ALLOWED_ATTRIBUTES:
        return f"attribute {node.attr!r} is not allowed"
    if not isinstance(node.ctx, ast.Load):
        return f"assigning or deleting attribute {node.attr!r} is not allowed"
    if node.attr in FORMAT_METHODS:
        return _format_problem(node.value)
    return None


def _format_problem(template: ast.expr) -> str | None:
    """``str.format`` looks up attributes and items named in the template's fields (``{0.__globals__}``),
    past the checks above; it is allowed on a literal template whose fields are plain names or positions."""
    if not (isinstance(template, ast.Constant) and isinstance(template.value, str)):
        return "str.format on anything but a literal template is not allowed; use an f-string or '{:.2f}'.format(x)"
    pending = [template.value]
    while pending:
        try:
            fields = list(_FORMATTER.parse(pending.pop()))
        except ValueError as e:
            return f"format template is not allowed: {e}"
        for _, name, spec, _ in fields:
            if name is not None and ("." in name or "[" in name):
                return f"format field {{{name}}} is not allowed: only plain names and positions"
            if spec:
                pending.append(spec)  # a spec may hold nested fields: '{:{0.attr}}'
    return None


def _time_error(timeout_s: float) -> str:
    return f"time limit of {timeout_s} s exceeded"


def _memory_error(memory_mb: int) -> str:
    return f"memory limit of {memory_mb} MB exceeded"


# ---- the child: everything below runs in the sandboxed interpreter ----


def _child(limits: dict[str, Any]) -> None:
    import io
    import resource

    def limit(kind: int, soft: int, hard: int) -> None:
        ceiling = resource.getrlimit(kind)[1]  # a process may lower its hard limit but never raise it
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(kind, (soft, hard))

    source = sys.stdin.buffer.read().decode("utf-8", "replace")
    memory = int(limits["memory_mb"]) * 1024 * 1024
    limit(resource.RLIMIT_AS, memory, memory)
    # a backstop for the alarm: SIGXCPU at the soft limit (SIGKILL at the hard one would read as a crash)
    cpu = math.ceil(float(limits["timeout_s"])) + 1
    limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    limit(resource.RLIMIT_FSIZE, 0, 0)  # no file writes
    limit(resource.RLIMIT_CORE, 0, 0)
    # os._exit, not an exception: the program could catch an exception with a bare `except:`
    signal.signal(signal.SIGALRM, lambda *_: os._exit(TIMEOUT_EXIT))
    signal.setitimer(signal.ITIMER_REAL, float(limits["timeout_s"]))
    printed = io.StringIO()
    value, error = _execute(source, printed, int(limits["memory_mb"]))
    signal.setitimer(signal.ITIMER_REAL, 0)
    sys.stdout.write(json.dumps({"value": value, "error": error, "stdout": printed.getvalue()[-MAX_STDOUT:]}))
    sys.stdout.flush()


def _execute(source: str, printed: Any, memory_mb: int) -> tuple[str | None, str | None]:
    """Run ``source`` and return (value, error)."""

    def safe_print(*args: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
        sep = " " if sep is None else str(sep)
        printed.write(sep.join(str(a) for a in args) + ("\n" if end is None else str(end)))

    namespace: dict[str, Any] = {
        "__builtins__": {**{name: getattr(builtins, name) for name in SAFE_BUILTINS}, "print": safe_print},
        "math": math, "Fraction": Fraction,
    }
    try:
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<program>", "exec"), namespace)
        result = eval(compile(ast.Expression(last.value), "<program>", "eval"), namespace) if last else None
        answer = namespace.get("answer")
        lines = [ln.strip() for ln in printed.getvalue().splitlines() if ln.strip()]
        if answer is not None:
            return _as_text(answer), None
        if lines:
            return lines[-1][:MAX_VALUE], None
        if result is not None:
            return _as_text(result), None
        return None, "the program produced no answer (set a variable named answer)"
    except MemoryError:
        return None, _memory_error(memory_mb)
    except SyntaxError as e:
        return None, f"syntax error: {e.msg} (line {e.lineno})"
    except BaseException as e:  # any failure of the program is its result, not the sandbox's
        where = f" (line {line})" if (line := _program_line(e)) else ""
        return None, f"{type(e).__name__}: {e}{where}"[:MAX_VALUE]


def _program_line(e: BaseException) -> int | None:
    """The innermost line of the program in ``e``'s traceback."""
    line, tb = None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _as_text(value: Any) -> str:
    """The answer as text a metric can read: 51.0 -> "51", Fraction(1, 3) -> "0.3333333333"."""
    if isinstance(value, Fraction):
        value = int(value) if value.denominator == 1 else float(value)
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        value = round(value, 10)
    return str(value)[:MAX_VALUE]


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
