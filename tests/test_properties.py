"""Property-based tests: arbitrary bytes and structures into the data loaders, the answer parsers, the metrics
and the sandbox's static check. Each gives a result or a clear TaskfitError, never another exception or a
hang (every example has a deadline)."""

from __future__ import annotations

import ast
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sandbox_programs import ESCAPES, PROGRAMS
from template_probes import HUGE_TEMPLATES, UNSAFE_TEMPLATES

from taskfit.dataset import Example, load_dataset, read_rows
from taskfit.errors import TaskfitError
from taskfit.metrics import build_metric
from taskfit.parsing import (
    extract_json,
    final_line,
    lookup,
    normalize,
    parse_json,
    parse_label,
    parse_output,
    parse_regex,
    parse_text,
)
from taskfit.prompts import render
from taskfit.sandbox import ALLOWED_ATTRIBUTES, _refusal, extract_code
from taskfit.taskfile import ParseConfig, load_task

# Fixed seed and no example database: the tier is fast, repeatable and writes nothing into the checkout.
FAST = settings(max_examples=120, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Text that looks like what models and data files hold: quotes, braces, separators, digits, odd code points.
model_text = st.text(alphabet=st.sampled_from(list("ab xyz019.,:;-\"'`{}[]()#$\n\r\t\\/\u2212\u201c\u201d\ufeff\x00")) |
                     st.characters(), max_size=80)


@pytest.fixture(scope="module")
def data_task() -> Iterator[tuple[Path, object]]:
    """A task whose test file the properties overwrite (hypothesis reuses one folder for every example)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "test.jsonl").write_text('{"text": "a", "label": "b"}\n')
        (root / "task.yaml").write_text(yaml.safe_dump({
            "name": "props", "data": {"test": "test.jsonl"}, "inputs": ["text"], "output": "label",
            "aliases": "also"}))
        yield root, load_task(root / "task.yaml")


def _outcome(fn, *args):
    """The call's result, or None when it raised a TaskfitError (any other exception fails the test)."""
    try:
        return fn(*args)
    except TaskfitError as e:
        assert str(e)  # a message the user can read
        return None


# ---- data loaders ----


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_any_bytes_in_a_data_file(data_task, data, suffix):
    root, _ = data_task
    path = root / f"raw{suffix}"
    path.write_bytes(data)
    rows = _outcome(read_rows, path)
    if rows is not None:
        assert all(isinstance(n, int) and n >= 1 and isinstance(r, dict) for n, r in rows)


@FAST
@given(lines=st.lists(json_values, max_size=6), bom=st.booleans())
def test_any_json_lines_into_examples(data_task, lines, bom):
    root, task = data_task
    text = "".join(json.dumps(v) + "\n" for v in lines)
    (root / "test.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    ds = _outcome(load_dataset, task)
    if ds is not None:
        for ex in ds.split("test"):
            assert isinstance(ex.target, str) and ex.target in ex.answers


@FAST
@given(rows=st.lists(st.dictionaries(st.sampled_from(["id", "text", "label", "also"]),
                                     json_values, min_size=1), max_size=5))
def test_rows_with_any_field_values(data_task, rows):
    root, task = data_task
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = _outcome(load_dataset, task)
    if ds is not None:
        assert all(ex.id for ex in ds.split("test"))


@FAST
@given(cells=st.lists(st.lists(st.text(max_size=6), max_size=4), max_size=5))
def test_any_csv_table(data_task, cells):
    root, _ = data_task
    path = root / "table.csv"
    path.write_text("\n".join(",".join(json.dumps(c) if c else "" for c in row) for row in cells), encoding="utf-8")
    rows = _outcome(read_rows, path)
    if rows is not None:
        assert all(None not in r and None not in r.values() for _, r in rows)


# ---- answer parsers ----


@FAST
@given(text=model_text, labels=st.lists(st.text(max_size=8), min_size=1, max_size=4),
       aliases=st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), max_size=2), max_size=2))
def test_label_parser(text, labels, aliases):
    res = parse_label(text, labels, aliases)
    assert res.failed or res.value in labels or res.value in aliases


@FAST
@given(text=model_text, pattern=st.sampled_from([r"(\d+)", r"answer: (\w+)", r"[A-D]", r"(x)?y", r"(", r"a{2,1}"]))
def test_regex_parser(text, pattern):
    res = _outcome(parse_regex, text, pattern)
    assert res is None or res.failed or isinstance(res.value, str)


@FAST
@given(text=model_text | json_values.map(json.dumps), field=st.none() | st.text(max_size=8))
def test_json_parser(text, field):
    res = parse_json(text, field)
    assert res.failed or isinstance(res.value, str)
    found = extract_json(text)
    assert found is None or isinstance(found, dict | list)


@FAST
@given(obj=json_values, path=st.text(alphabet="ab0-1.\u00b2", max_size=8))
@example(obj=[1], path="--0")
@example(obj=[1], path="\u00b2")
def test_lookup(obj, path):
    found, _ = lookup(obj, path)
    assert isinstance(found, bool)


@FAST
@given(text=model_text, kind=st.sampled_from(["auto", "label", "regex", "json", "text"]), last=st.booleans(),
       labels=st.none() | st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3))
def test_parse_output(text, kind, last, labels):
    config = ParseConfig(type=kind, pattern=r"(\d+)" if kind == "regex" else None, final_line=last)
    res = _outcome(parse_output, text, config, labels, {})
    assert res is None or res.failed or isinstance(res.value, str)
    assert isinstance(normalize(text), str) and isinstance(final_line(text), str)
    assert parse_text(text).failed or parse_text(text).value


# ---- metrics ----

METRICS = [("exact_match", {}), ("exact_match", {"normalize": False, "first_segment": True}), ("contains", {}),
           ("regex", {"pattern": r"\d+"}), ("numeric", {}), ("token_f1", {}), ("fuzzy", {}),
           ("fuzzy", {"threshold": 0.8}), ("json_valid", {}), ("json_match", {}),
           ("json_match", {"fields": ["a", "b.0"]})]


@FAST
@given(prediction=st.none() | model_text | json_values.map(json.dumps),
       target=model_text | json_values.map(json.dumps), others=st.lists(model_text, max_size=2),
       which=st.sampled_from(range(len(METRICS))))
def test_metrics(prediction, target, others, which):
    name, options = METRICS[which]
    metric = build_metric(name, options)
    example = Example(id="e", fields={}, target=target, answers=(target, *others), source="data.jsonl:3")
    score = _outcome(metric, prediction, example)
    if score is not None:
        assert isinstance(score, float) and not math.isnan(score) and 0.0 <= score <= 1.0
        assert not metric.binary or score in (0.0, 1.0)


# ---- the sandbox's static check ----

CODE_PIECES = ["x", "answer", " = ", "1", "'{0}'", "'{0.__class__}'", "'{:{0.real}}'", ".format", ".format_map",
               "(", ")", "[", "]", "{", "}", ":", ",", "f'{x}'", "print", "__import__", "getattr", "\n", "    ",
               "def f", "lambda", "import os", "case", "match x", "str", ".", "__globals__", "'{'", "\\", "#",
               "case str(format=f)", "case int(real=r)", "format=", "type", "vars", "object", ".mro", "=f"]


@FAST
@given(code=st.lists(st.sampled_from(CODE_PIECES), max_size=14).map("".join) | st.text(max_size=60))
def test_sandbox_check(code):
    refusal = _refusal(code)
    assert refusal is None or isinstance(refusal, str) and refusal
    if refusal is None:  # what passes parses, names no dunder and reads only allowed attributes
        nodes = list(ast.walk(ast.parse(code)))
        assert not any(n.id.startswith("__") for n in nodes if isinstance(n, ast.Name))
        attrs = [n.attr for n in nodes if isinstance(n, ast.Attribute)]
        attrs += [a for n in nodes if isinstance(n, ast.MatchClass) for a in n.kwd_attrs]
        assert set(attrs) <= ALLOWED_ATTRIBUTES
        assert not any(a in ("format", "format_map") for n in nodes if isinstance(n, ast.MatchClass)
                       for a in n.kwd_attrs)
    assert isinstance(extract_code(code), str)


@FAST
@given(field=st.from_regex(r"[0-9a-z_]{0,3}(\.[a-z_]{1,5}|\[[a-z0-9_]{1,5}\])+", fullmatch=True),
       shape=st.sampled_from(["'{%s}'.format(x)", "'{:{%s}}'.format(x)", "'a{%s!r:>4}'.format_map(d)"]))
def test_sandbox_refuses_every_format_field_lookup(field, shape):
    assert "not allowed" in (_refusal("x = 1\nd = {}\nanswer = " + shape.replace("%s", field)) or "")


@FAST
@given(field=st.from_regex(r"[0-9]{0,2}|[a-z_][a-z0-9_]{0,5}", fullmatch=True),
       spec=st.sampled_from(["", ":.2f", "!r", ":>{w}"]))
def test_sandbox_allows_plain_format_fields(field, spec):
    code = "answer = '{FIELD} and {{}}'.format(1, 2, w=3, **{})".replace("FIELD", field + spec)
    assert _refusal(code) is None


# Statement contexts a program may put anything in: a refusal must not depend on where the code sits.
WRAPPERS = ["{}", "x = 1\n{}", "def f():\n{}", "if x:\n{}", "for i in range(2):\n{}", "while False:\n{}",
            "try:\n{}\nexcept Exception:\n    pass", "match x:\n    case _:\n{}", "def f(n=1):\n    def g():\n{}"]


def _wrap(wrapper: str, code: str) -> str:
    depth = 0 if wrapper == "{}" or wrapper.startswith("x = 1") else 4 * wrapper.count(":\n")
    if "except" in wrapper:
        depth = 4
    body = "\n".join(" " * depth + line for line in code.splitlines())
    return wrapper.format(body)


@pytest.mark.parametrize("code", ESCAPES)
def test_sandbox_refuses_every_escape(code):
    assert "not allowed" in (_refusal(code) or "")


@FAST
@given(code=st.sampled_from(ESCAPES), wrapper=st.sampled_from(WRAPPERS), nest=st.sampled_from(WRAPPERS))
def test_sandbox_refuses_escapes_wherever_they_sit(code, wrapper, nest):
    program = _wrap(nest, _wrap(wrapper, code))
    assert "not allowed" in (_refusal(program) or ""), program


@FAST
@given(program=st.sampled_from(PROGRAMS), wrapper=st.sampled_from(WRAPPERS))
def test_sandbox_allows_model_programs_wherever_they_sit(program, wrapper):
    code = _wrap(wrapper, program[0])
    assert _refusal(code) is None, code


# ---- the template sandbox ----

TEMPLATE_PIECES = ["{{ ", " }}", "{% for i in range(", ") %}", "{% endfor %}", "'ab'", "text", " * ", " ~ ", " + ",
                   "10**6", "1000", "|center(", "|join(", "|list", "|indent(", ".replace('a', ", ".center(", ")",
                   "(", "[", "]", ",", " % ", "'%9d'", "'{:>99}'.format(", "__class__", ".", "|attr(", "loop.index",
                   "{% set ns = namespace(s='x') %}", "{% set ns.s = ns.s ~ ns.s %}", "|wordwrap(", "|tojson(",
                   "'{0.__class__}'.format(", "**", "{% macro m() %}", "{% endmacro %}", "m()", "lipsum", "cycler"]
TEMPLATE_LIMIT = 10_000


@FAST
@example(source=HUGE_TEMPLATES[0])
@given(source=st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=16).map("".join)
       | st.sampled_from(HUGE_TEMPLATES + UNSAFE_TEMPLATES))
def test_any_template_renders_within_the_limit_or_is_refused(source):
    """Whatever a task file's template holds, rendering gives text within the limit or a TaskfitError."""
    try:
        out = render(source, {"text": "abc"}, "prompt.input_template", max_chars=TEMPLATE_LIMIT)
    except TaskfitError as e:
        assert str(e).startswith("prompt.input_template: ")
        return
    assert len(out) <= TEMPLATE_LIMIT
    assert source not in HUGE_TEMPLATES + UNSAFE_TEMPLATES
