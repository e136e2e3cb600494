"""The template sandbox: unsafe access and oversized output are TaskfitErrors, refused before the value is
built; the limit is the task file's prompt.max_chars; validate renders every template over a sample row and
names the file, line and field; eval reports a template's failure on one line and keeps the rows done."""

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import write_jsonl
from template_probes import HUGE_TEMPLATES, UNSAFE_TEMPLATES

from taskfit.errors import TaskfitError
from taskfit.prompts import render
from taskfit.runner import CHUNK, evaluate
from taskfit.study import prepare, select_arms


@pytest.mark.parametrize("source", UNSAFE_TEMPLATES)
def test_unsafe_access_names_the_template_and_the_row(source):
    with pytest.raises(TaskfitError) as e:
        render(source, {"text": "x"}, "prompt.input_template", row="data/test.jsonl:3")
    assert str(e.value).startswith("prompt.input_template: ") and "on row data/test.jsonl:3" in str(e.value)


@pytest.mark.parametrize("source", HUGE_TEMPLATES)
def test_huge_output_is_refused_before_it_is_built(source):
    tracemalloc.start()
    try:
        with pytest.raises(TaskfitError, match="prompt.input_template: "):
            render(source, {"text": "x"}, "prompt.input_template")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # what each would build is 10**8 characters or more; the default limit is 10**6
    assert peak < 32 * 2**20


def test_output_within_the_limit_renders():
    assert render("{{ 'ab' * 3 }}-{{ text|center(7) }}-{{ '%5.1f' % 2.25 }}", {"text": "x"}, max_chars=40) == (
        "ababab-   x   -  2.2")
    with pytest.raises(TaskfitError, match="over the limit of 10 characters|limit of 10 characters"):
        render("{{ text }}{{ text }}", {"text": "abcdef"}, max_chars=10)


def _line_of(path, key: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.lstrip().startswith(key))


@pytest.mark.parametrize("template", [*UNSAFE_TEMPLATES[:3], "{{ 'a' * 10**9 }} | {{ text }}",
                                      "{% if text %}{{ text.__class__ }}{% endif %}",
                                      "{{ '{0.__class__}'.format(text) }}"])
def test_validate_names_file_line_and_field(make_task, template):
    path = make_task(prompt={"instruction": "Classify.", "input_template": template})
    with pytest.raises(TaskfitError) as e:
        prepare(path)
    assert (e.value.file, e.value.line, e.value.field) == (str(path), _line_of(path, "input_template:"),
                                                           "prompt.input_template")


def test_validate_checks_a_strategy_templates_size(make_task):
    path = make_task(strategies=[{"name": "rag", "docs": "data/train.jsonl", "text_field": "text", "k": 1,
                                  "query_template": "{{ text * 2000000 }}"}])
    with pytest.raises(TaskfitError) as e:
        prepare(path)
    assert e.value.field == "strategies[0].query_template" and "over the limit" in str(e.value)


@pytest.mark.parametrize(("prompt", "message"), [
    ("{{ text }} {{ 'a' * 10**9 }}", "over the limit"),
    ("{{ steps.draft.__class__ }}", "unsafe attribute"),
])
def test_validate_checks_a_chain_steps_templates(make_task, prompt, message):
    steps = [{"name": "draft", "prompt": "Review: {{ text }}"}, {"name": "final", "prompt": prompt}]
    path = make_task(strategies=[{"name": "chain", "steps": steps}])
    with pytest.raises(TaskfitError) as e:
        prepare(path)
    assert e.value.field == "strategies[0].steps[1].prompt" and message in str(e.value)


def _task_with_a_bad_row(make_task, tmp_path, bad: dict, **prompt):
    """40 rows; row 36 (line 36 of the file) is ``bad``, so the first chunk of rows is done before it."""
    path = make_task(inputs=["text", "key"], prompt={"instruction": "Classify.", **prompt})
    rows = [{"id": f"r{i}", "text": "a great film", "key": "upper", "label": "positive"} for i in range(40)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    rows[35].update(bad)
    write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    return path


@pytest.mark.parametrize(("bad", "prompt", "message"), [
    ({"key": "__class__"}, {"input_template": "{{ text[key]() }}"}, "refused by the template sandbox"),
    ({"text": "x" * 200}, {"input_template": "Review: {{ text }}", "max_chars": 100},
     "the output would pass the limit of 100 characters"),
])
def test_eval_stops_at_the_row_and_keeps_the_rows_before(make_task, tmp_path, workspace, bad, prompt, message):
    path = _task_with_a_bad_row(make_task, tmp_path, bad, **prompt)
    task, ds = prepare(path)  # the sample row is fine
    with pytest.raises(TaskfitError) as e:
        evaluate(task, ds, select_arms(task, ["zero_shot"], None), split="test", limit=None, workspace=workspace)
    assert str(e.value).startswith("prompt.input_template: ") and message in str(e.value)
    assert "test.jsonl:36" in str(e.value)
    (run,) = workspace.runs.list(5)
    assert workspace.runs.progress(run.id) == CHUNK and run.status == "running"  # resumable


def _taskfit(args, home):
    env = {**os.environ, "TASKFIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "taskfit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.slow  # two subprocesses: about 10 s on 2 cores
def test_cli_reports_a_template_on_one_line(make_task, tmp_path, taskfit_home):
    path = make_task(prompt={"instruction": "x", "input_template": "{{ ''.__class__.__mro__ }} | {{ text }}"})
    res = _taskfit(["validate", str(path)], taskfit_home)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {path}:{_line_of(path, 'input_template:')}: prompt.input_template: ")
    path = _task_with_a_bad_row(make_task, tmp_path, {"key": "__class__"}, input_template="{{ text[key]() }}")
    res = _taskfit(["eval", str(path), "--strategy", "zero_shot"], taskfit_home)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: prompt.input_template: refused by the template")


ORDINARY = ("{% for x in items %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }} {% endfor %}|"
            "{% for x in items if x > 1 %}{{ x }}{% else %}none{% endfor %}|{{ items|map('string')|join(', ') }}|"
            "{{ names|selectattr('a')|map(attribute='a')|list }}|{{ text|title|trim|default('z') }}|"
            "{{ items|length }} {{ 2.567|round(1) }} {{ '3'|int + 1 }}|{{ text ~ '-' ~ items[0] }}|"
            "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m(text) }}|{% set b %}block {{ text }}{% endset %}{{ b }}|"
            "{% raw %}{{ x }}{% endraw %}|{{ '%5.1f' % 2.25 }}|{{ '{:>5}'.format('a') }}|{{ 'x'.upper() * 3 }}|"
            "{% for k, v in d|dictsort %}{{ k }}={{ v }} {% endfor %}|{{ d|tojson }}|{{ text|wordwrap(5) }}|"
            "{{ text|indent(2, true) }}|{{ text|replace('o', '0') }}|{{ text|center(15) }}|{{ text|batch(3)|list }}|"
            "{{ 'Review: ' + text }}|{% for n in tree recursive %}{{ n.name }}{% if n.kids %}({{ loop(n.kids) }})"
            "{% endif %}{% endfor %}")


def test_ordinary_templates_render_as_jinja2_renders_them():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    variables = {"items": [1, 2, 3], "names": [{"a": 1}, {"a": 0}], "text": "hello world", "d": {"b": 2, "a": 1},
                 "tree": [{"name": "a", "kids": [{"name": "b", "kids": []}]}]}
    plain = SandboxedEnvironment(undefined=StrictUndefined).from_string(ORDINARY).render(**variables)
    assert render(ORDINARY, variables) == plain and "a(b)" in plain


def test_eval_reports_a_refused_template_once(tmp_path, monkeypatch):
    """The cost estimate made before a run does not print the task file's fault a second time."""
    import shutil

    from typer.testing import CliRunner

    from taskfit.cli import app

    root = Path(__file__).resolve().parents[1] / "examples" / "ci"
    shutil.copytree(root, tmp_path / "ci")
    task = tmp_path / "ci" / "task.yaml"
    task.write_text(task.read_text().replace('input_template: "Review: {{ text }}"',
                                             "input_template: \"{{ 'a' * 10**9 }}\""))
    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(app, ["eval", str(task)])
    assert res.exit_code != 0
    assert "no cost estimate" not in res.output
