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
