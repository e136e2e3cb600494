import pytest

from taskfit.dataset import load_dataset
from taskfit.errors import TaskfitError
from taskfit.taskfile import load_task


def test_malformed_json_names_file_and_line(make_task, tmp_path):
    task = load_task(make_task())
    lines = (tmp_path / "data" / "test.jsonl").read_text().splitlines()
    lines[2] = '{"id": "r2", "text": "oops", "label": '
    (tmp_path / "data" / "test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskfitError) as e:
        load_dataset(task)
    assert e.value.line == 3
    assert str(e.value).startswith(f"{tmp_path / 'data' / 'test.jsonl'}:3: malformed JSON")


def test_missing_field_names_field_and_line(make_task, tmp_path):
    task = load_task(make_task())
    p = tmp_path / "data" / "test.jsonl"
    p.write_text(p.read_text() + '{"id": "x", "txt": "hi", "label": "positive"}\n')
    with pytest.raises(TaskfitError) as e:
        load_dataset(task)
    assert e.value.field == "text" and e.value.line == 9 and "missing field 'text'" in str(e.value)


def test_label_outside_label_set(make_task, tmp_path):
    task = load_task(make_task())
    p = tmp_path / "data" / "test.jsonl"
    p.write_text(p.read_text() + '{"id": "x", "text": "hi", "label": "neutral"}\n')
    with pytest.raises(TaskfitError, match="not one of the task's labels"):
        load_dataset(task)


def test_csv_and_single_file_split(make_task, tmp_path):
    (tmp_path / "data").mkdir()
    csv = tmp_path / "data" / "all.csv"
    csv.write_text("id,text,label\n" + "".join(f"c{i},text {i},{'positive' if i % 2 else 'negative'}\n" for i in range(20)))
    path = make_task(data={"file": "data/all.csv", "split": {"train": 0.5, "dev": 0.2, "test": 0.3}, "seed": 3})
    ds = load_dataset(load_task(path))
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 10, "dev": 4, "test": 6}
    again = load_dataset(load_task(path))
    assert [e.id for e in again.splits["test"]] == [e.id for e in ds.splits["test"]]
    assert not set(e.id for e in ds.splits["train"]) & set(e.id for e in ds.splits["test"])


def test_csv_row_with_extra_values(make_task, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "all.csv").write_text("id,text,label\na,b,positive\nc,d,negative,extra\n")
    ds_task = load_task(make_task(data={"file": "data/all.csv"}))
    with pytest.raises(TaskfitError) as e:
        load_dataset(ds_task)
    assert e.value.line == 3


def test_aliases_field(make_task, tmp_path):
    from conftest import write_jsonl

    write_jsonl(tmp_path / "data" / "qa.jsonl", [{"id": "q1", "question": "capital of England?", "answer": "London",
                                                  "aliases": ["London, England"]}])
    task = load_task(make_task(data={"test": "data/qa.jsonl"}, inputs=["question"], output="answer",
                               aliases="aliases", labels=None, strategies=["zero_shot"]))
    ex = load_dataset(task).split("test")[0]
    assert ex.answers == ("London", "London, England")


# ---- missing values: never the text "None" ----


def _jsonl_task(make_task, tmp_path, lines: list[str], **overrides):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "rows.jsonl").write_text("".join(line + "\n" for line in lines))
    return make_task(labels=None, data={"test": "data/rows.jsonl", **overrides.pop("data", {})}, **overrides)


GOOD = '{"id": "a", "text": "fine film", "label": "positive"}'


@pytest.mark.parametrize("row, field, why", [
    ('{"id": "b", "text": "dull", "label": null}', "label", "null"),
    ('{"id": "b", "text": "dull", "label": NaN}', "label", "NaN"),
    ('{"id": "b", "text": "dull", "label": ""}', "label", "empty"),
    ('{"id": "b", "text": "dull", "label": "  "}', "label", "empty"),
    ('{"id": "b", "text": "dull"}', "label", "missing field"),
    ('{"id": "b", "text": null, "label": "negative"}', "text", "null"),
    ('{"id": "b", "text": NaN, "label": "negative"}', "text", "NaN"),
])
def test_a_null_or_empty_value_names_file_line_and_field(make_task, tmp_path, row, field, why):
    path = _jsonl_task(make_task, tmp_path, [GOOD, row])
    with pytest.raises(TaskfitError) as e:
        load_dataset(load_task(path))
    assert (e.value.file, e.value.line, e.value.field) == (str(tmp_path / "data" / "rows.jsonl"), 2, field)
    assert why in str(e.value) and "None" not in str(e.value)


def test_an_empty_csv_target_cell_names_file_line_and_field(make_task, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "all.csv").write_text("id,text,label\na,fine,positive\nb,dull,\n")
    with pytest.raises(TaskfitError) as e:
        load_dataset(load_task(make_task(labels=None, data={"test": "data/all.csv"})))
    assert (e.value.line, e.value.field) == (3, "label") and "empty" in str(e.value)


def test_on_missing_skip_leaves_rows_out_and_counts_them(make_task, tmp_path, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    rows = [GOOD, '{"id": "b", "text": "dull", "label": null}', '{"id": "c", "text": null, "label": "negative"}',
            '{"id": "d", "text": "awful", "label": "negative"}']
    path = _jsonl_task(make_task, tmp_path, rows, data={"on_missing": "skip"})
    ds = load_dataset(load_task(path))
    assert [ex.id for ex in ds.split("test")] == ["a", "d"] and len(ds.skipped) == 2
    assert ds.skipped_note().startswith("skipped 2 rows with a missing value") and "rows.jsonl:2, field 'label'" in ds.skipped_note()
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 0 and "test=2" in res.output and "skipped 2 rows" in res.output, res.output
    res = CliRunner().invoke(app, ["eval", str(path), "-s", "zero_shot"])
    assert res.exit_code == 0 and "skipped 2 rows" in res.output, res.output


def test_every_row_missing_a_value_is_an_error_even_when_skipping(make_task, tmp_path):
    path = _jsonl_task(make_task, tmp_path, ['{"id": "b", "text": "dull", "label": null}'],
                       data={"on_missing": "skip"})
    with pytest.raises(TaskfitError, match="every row misses a value"):
        load_dataset(load_task(path))


def test_a_null_input_of_an_unlabeled_row_is_an_error(make_task, tmp_path):
    from taskfit.distill.label import load_unlabeled

    _jsonl_task(make_task, tmp_path, [GOOD])
    (tmp_path / "data" / "unlabeled.jsonl").write_text('{"id": "u1", "text": "ok"}\n{"id": "u2", "text": null}\n')
    path = make_task(labels=None, data={"test": "data/rows.jsonl", "unlabeled": "data/unlabeled.jsonl"})
    with pytest.raises(TaskfitError) as e:
        load_unlabeled(load_task(path))
    assert (e.value.line, e.value.field) == (2, "text")


def test_an_object_input_shows_as_json_in_the_default_template(make_task, tmp_path):
    from taskfit.prompts import prompt_parts, render_input

    path = _jsonl_task(make_task, tmp_path, ['{"id": "a", "text": {"title": "Heat", "year": null}, "label": "x"}'],
                       prompt={"instruction": "Classify."})
    task = load_task(path)
    (ex,) = load_dataset(task).split("test")
    assert render_input(prompt_parts(task), ex) == 'Text: {"title": "Heat", "year": null}'


def test_an_unterminated_csv_quote_is_named_where_it_opens(make_task, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "unterminated.csv").write_text(
        'id,text,label\na,"say ""hi"" twice",positive\nb,"a dull film,negative\nc,fine,positive\n')
    with pytest.raises(TaskfitError) as e:
        load_dataset(load_task(make_task(data={"test": "data/unterminated.csv"})))
    assert e.value.line == 3 and "unterminated quote" in str(e.value) and "column 3" in str(e.value)
    assert "values" not in str(e.value)


def test_a_stray_quote_inside_a_csv_value_is_still_read(make_task, tmp_path):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "all.csv").write_text('id,text,label\na,5" screen,positive\n')
    (ex,) = load_dataset(load_task(make_task(data={"test": "data/all.csv"}))).split("test")
    assert ex.fields["text"] == '5" screen'


@pytest.mark.parametrize("on_missing", ["error", "skip"])
def test_a_null_field_that_only_a_template_shows_is_missing_too(make_task, tmp_path, on_missing):
    from taskfit.study import prepare

    rows = [GOOD.replace('"text"', '"context": "a review", "text"'), '{"id": "b", "text": "dull", "context": null, '
            '"label": "negative"}', '{"id": "c", "text": "ok", "context": "x", "label": "positive"}']
    path = _jsonl_task(make_task, tmp_path, rows, data={"on_missing": on_missing},
                       prompt={"instruction": "Classify the {{ context }}.", "input_template": "{{ text }}"})
    if on_missing == "error":
        with pytest.raises(TaskfitError) as e:
            prepare(path)
        assert (e.value.line, e.value.field) == (2, "context") and "null" in str(e.value)
    else:
        _, ds = prepare(path)
        assert [ex.id for ex in ds.split("test")] == ["a", "c"] and ds.skipped_note().startswith("skipped 1 row")
