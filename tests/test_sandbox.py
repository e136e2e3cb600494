"""The program sandbox: each refusal, the time and memory limits, how a result is read, code extraction."""

import pytest
from sandbox_programs import ESCAPES, PROGRAMS

from taskfit.sandbox import extract_code, run_program


@pytest.mark.parametrize(("code", "message"), [
    ("import os\nanswer = os.getcwd()", "imports are not allowed (line 1)"),
    ("x = 1\nfrom os import path", "imports are not allowed (line 2)"),
    ('__import__("os").system("true")', "name '__import__' is not allowed"),
    ('open("/etc/passwd").read()', "name 'open' is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "is not allowed"),
    ("f = eval\nf('1')", "name 'eval' is not allowed"),
    ('getattr(1, "real")', "name 'getattr' is not allowed"),
    ("answer = math.__loader__", "attribute '__loader__' is not allowed"),
    ("def g():\n    yield g.gi_frame.f_back\nanswer = list(g())", "is not allowed (line 2)"),
    ("match 1:\n    case int(__class__=c):\n        answer = c", "attribute '__class__' is not allowed"),
    ("class A:\n    pass", "class definitions are not allowed"),
])
def test_refuses_before_running(code, message):
    res = run_program(code)
    assert res.value is None and message in res.error
    assert res.elapsed_ms < 50  # refused by the static check: no process was started


@pytest.mark.parametrize("code", ESCAPES)
def test_escape_corpus_is_refused_before_running(code):
    res = run_program(code)
    assert res.value is None and "not allowed" in res.error and res.elapsed_ms < 50, res


def test_class_pattern_cannot_bind_str_format():
    # `case str(format=f)` binds str.format without an attribute node; f(print) would read the child's globals
    code = ("match '{0.__globals__[sys].modules[os].environ} {0.__globals__[sys].executable}':\n"
            "    case str(format=f):\n        answer = f(print)")
    res = run_program(code)
    assert res.value is None and res.error == "attribute 'format' is not allowed in a class pattern (line 2)"


@pytest.mark.parametrize(("code", "value"), PROGRAMS)
def test_programs_a_model_writes_still_run(code, value):
    res = run_program(code)
    assert res.error is None and res.value == value


def test_runtime_builtins_are_restricted():
    # a builtin name the program binds in another scope passes the static check, and still finds nothing
    res = run_program("def f(type):\n    return type\nanswer = type(1)")
    assert res.value is None and res.error.startswith("NameError") and "(line 3)" in res.error


def test_time_limit_stops_an_endless_loop():
    res = run_program("while True:\n    pass", timeout_s=0.5)
    assert res.value is None and res.error == "time limit of 0.5 s exceeded"
    assert res.elapsed_ms < 3000


def test_time_limit_cannot_be_caught():
    res = run_program("while True:\n    try:\n        x = 1\n    except:\n        pass", timeout_s=0.5)
    assert "time limit" in res.error and res.elapsed_ms < 3000


def test_memory_limit():
    res = run_program("x = [0] * (10**9)\nanswer = len(x)", memory_mb=128)
    assert res.value is None and res.error == "memory limit of 128 MB exceeded"


def test_answer_variable():
    res = run_program("answer = sum(range(10))")
    assert res.value == "45" and res.error is None and res.elapsed_ms < 500


def test_last_printed_line_when_no_answer_variable():
    res = run_program("print('working')\nprint(6 * 7)")
    assert res.value == "42" and res.stdout == "working\n42\n"


def test_final_expression_when_nothing_printed():
    assert run_program("x = 3\nx * 2").value == "6"


def test_answer_variable_wins_over_print_and_expression():
    assert run_program("answer = 1\nprint(2)\n3").value == "1"


def test_math_and_number_formatting():
    assert run_program("answer = math.sqrt(16)").value == "4"  # an integral float reads as an integer
    assert run_program("answer = 0.1 + 0.2").value == "0.3"
    assert run_program("answer = Fraction(1, 4) * 2").value == "0.5"


def test_program_errors_come_back_as_errors():
    res = run_program("x = 1\nanswer = x / 0")
    assert res.error == "ZeroDivisionError: division by zero (line 2)"
    assert run_program("x = 1").error.startswith("the program produced no answer")
    assert run_program("answer = (").error.startswith("syntax error")


def test_extract_code_from_fenced_reply():
    reply = "Here is the program:\n```python\nx = 17\nanswer = x * 3\n```\nThe answer is 51."
    assert extract_code(reply) == "x = 17\nanswer = x * 3"
    assert extract_code("```\nanswer = 2\n```") == "answer = 2"
    # a python block wins over an earlier unlabelled one
    assert extract_code("```\nout\n```\n```python\nanswer = 1\n```") == "answer = 1"


def test_extract_code_from_cut_off_fence():
    assert extract_code("```python\nx = 4\nanswer = x +") == "x = 4"


def test_extract_code_from_unfenced_reply():
    reply = "Let me compute it.\nx = 17 * 3\nanswer = x\nSo the answer is 51."
    assert extract_code(reply) == "x = 17 * 3\nanswer = x"
    assert extract_code("no code here") == "no code here"
