"""Running a small untrusted Python program (a model's answer as code) and reading its result.

Two layers. A static check refuses imports, dunder names and attributes, frame/generator introspection
attributes and the builtins that reach files or the interpreter (``open``, ``eval``, ``getattr``, ...).
What passes runs in a fresh interpreter (``python -I -S`` on this file: no site-packages, no user path)
with only safe builtins, a pre-imported ``math`` and ``Fraction``, an address-space limit (RLIMIT_AS),
no file writes (RLIMIT_FSIZE 0), a CPU limit and a wall-clock alarm; the parent kills it if it overruns.

This module runs as the child too, so it imports nothing outside the standard library.
"""

from __future__ import annotations

import ast
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

FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "__import__", "input", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "breakpoint", "exit", "quit", "help", "memoryview",
})
# Attributes that walk from an ordinary object to frames and their globals, i.e. out of the sandbox
# (RestrictedPython's INSPECT_ATTRIBUTES); none of them starts with "_".
FORBIDDEN_ATTRIBUTES = frozenset({
    "tb_frame", "tb_next", "co_code", "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace",
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_await", "cr_frame", "cr_code", "cr_origin", "ag_code",
    "ag_frame",
})
FORMAT_METHODS = frozenset({"format", "format_map"})  # attribute lookups hide in their templates' field names
_FORMATTER = string.Formatter()
SAFE_BUILTINS = (
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hex", "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
    "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "Exception", "IndexError", "KeyError", "OverflowError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError",
)
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
    """Why ``code`` may not run, or None. Checked before any process starts."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"syntax error: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        return f"syntax error: {type(e).__name__}: {e}"
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import | ast.ImportFrom):
            return f"imports are not allowed (line {line})"
        if isinstance(node, ast.ClassDef):
            return f"class definitions are not allowed (line {line})"
        if isinstance(node, ast.Name) and (node.id.startswith("__") or node.id in FORBIDDEN_NAMES):
            return f"name {node.id!r} is not allowed (line {line})"
        attrs = [node.attr] if isinstance(node, ast.Attribute) else []
        if isinstance(node, ast.MatchClass):  # `case int(__class__=c)` reads an attribute too
            attrs = list(node.kwd_attrs)
        for attr in attrs:
            if attr.startswith("_") or attr in FORBIDDEN_ATTRIBUTES:
                return f"attribute {attr!r} is not allowed (line {line})"
        if isinstance(node, ast.Attribute) and node.attr in FORMAT_METHODS:
            problem = _format_problem(node.value)
            if problem:
                return f"{problem} (line {line})"
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

    import builtins

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
