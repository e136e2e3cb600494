import pytest

from taskfit.errors import TaskfitError
from taskfit.prompts import check_template, render, structured_prompt
from taskfit.study import prepare


def test_user_data_is_never_template_code():
    text = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"
    assert render("Review: {{ text }}", {"text": text}) == f"Review: {text}"


def test_sandbox_blocks_attribute_escapes():
    with pytest.raises(TaskfitError, match="refused by the template sandbox"):
        render("{{ text.__class__.__mro__[1].__subclasses__() }}", {"text": "x"})


def test_missing_field_reference_is_named():
    with pytest.raises(TaskfitError) as e:
        check_template("Q: {{ question }} C: {{ contxt }}", {"question", "context"}, "prompt.input_template", "t.yaml")
    assert "'contxt'" in str(e.value) and "prompt.input_template" in str(e.value) and "t.yaml" in str(e.value)


def test_task_with_bad_template_fails_before_any_call(make_task):
    path = make_task(prompt={"instruction": "x", "input_template": "Review: {{ review }}"})
    with pytest.raises(TaskfitError, match="'review'"):
        prepare(path)


def test_structured_sections_in_order_and_optional():
    text = structured_prompt({"recap": "Be brief.", "objective": "You are a critic.", "constraints": ["No spoilers", "One word"],
                              "context": None})
    assert text.index("<OBJECTIVE>") < text.index("<CONSTRAINTS>") < text.index("<RECAP>")
    assert "<CONTEXT>" not in text
    assert "1. No spoilers\n2. One word" in text
