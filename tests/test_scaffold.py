"""`taskfit init`: a task file proposed from a data file, interactively or from flags, that validates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.scaffold import detect_labels, propose
from taskfit.study import prepare

ROOT = Path(__file__).resolve().parents[1]


def test_banking77_without_questions(tmp_path, taskfit_home):
    data = ROOT / "examples/banking77/data/train.jsonl"
    out = tmp_path / "task.yaml"
    res = CliRunner().invoke(app, ["init", str(data), "--out", str(out), "--yes", "--queries-per-day", "5000"])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load(out.read_text())
    labels = {json.loads(line)["label"] for line in data.read_text().splitlines()}
    assert config["output"] == "label" and config["inputs"] == ["text"] and set(config["labels"]) == labels
    assert config["metrics"] == ["accuracy"]
    assert {"name": "few_shot", "k": 8, "selection": "knn"} in config["strategies"]  # many labels
    assert config["tuning"][0]["objective"] == "classify"
    assert "#   queries per day: 5,000" in out.read_text()
    task, ds = prepare(out)
    assert len(ds.split("test")) and len(ds.split("train")) > len(ds.split("test"))


def test_interactive_csv_with_free_text_answers(tmp_path, taskfit_home):
    data = tmp_path / "faq.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "context", "reply"])
        for i in range(30):
            w.writerow([f"q{i}", f"How do I reset device {i}?", "manual", f"Hold the button for {i} seconds, then wait."])
    out = tmp_path / "task.yaml"
    # field to predict, inputs, keep token_f1, accuracy target, queries/day, latency, budget, data may leave
    answers = "reply\nquestion\n\n0.7\n\n800\n\ny\n"
    res = CliRunner().invoke(app, ["init", str(data), "--out", str(out)], input=answers)
    assert res.exit_code == 0, res.output
    assert "How do I reset device 0?" in res.output  # the rows were shown
    text = out.read_text()
    config = yaml.safe_load(text)
    assert config["output"] == "reply" and config["inputs"] == ["question"] and "labels" not in config
    assert config["metrics"] == ["token_f1"] and "tuning" not in config  # too few rows to fine-tune
    assert "#   accuracy target: 0.7" in text and "#   latency limit: 800 ms" in text
    assert "# a hosted model may be added" in text
    prepare(out)


def test_label_sets_numbers_and_free_text():
    assert detect_labels(["yes", "no", "yes", "no", "yes", "no"]) == ["no", "yes"]
    assert detect_labels([f"a long free text answer number {i}" for i in range(9)]) is None


def test_numeric_outputs_get_the_numeric_metric_and_cot(tmp_path):
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(20)))
    p = propose(data)
    assert p.output == "answer" and p.labels is None and p.metric == "numeric"


@pytest.mark.slow
def test_the_banking77_task_file_prices_a_20_row_run(tmp_path, taskfit_home):
    out = tmp_path / "task.yaml"
    data = ROOT / "examples/banking77/data/train.jsonl"
    assert CliRunner().invoke(app, ["init", str(data), "--out", str(out), "--yes"]).exit_code == 0
    dry = CliRunner().invoke(app, ["run", str(out), "--dry-run", "--limit", "20"])  # kNN demos load MiniLM
    assert dry.exit_code == 0, dry.output
    assert "few_shot_knn" in dry.stdout


def test_a_train_file_with_a_test_file_beside_it_sorted_by_label(tmp_path, taskfit_home):
    folder = tmp_path / "intents"
    folder.mkdir()
    for split, n in (("train", 60), ("test", 30)):  # grouped by label, as Banking77 ships
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}{i}", "text": f"message {i}", "label": f"intent_{i * 6 // n}"}) + "\n"
            for i in range(n)))
    out = tmp_path / "task.yaml"
    res = CliRunner().invoke(app, ["init", str(folder / "train.jsonl"), "--out", str(out), "--yes",
                                   "--queries-per-day", "5000", "--latency-ms", "400"])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load(out.read_text())
    assert config["name"] == "intents"  # the folder names the task, not "train"
    assert config["data"]["test"].endswith("intents/test.jsonl") and "split" not in config["data"]
    assert config["data"]["shuffle"] is True
    assert config["costs"] == {"volume": "1825000/year", "latency_p50_ms": 400}
    task, ds = prepare(out)
    first = [ex.target for ex in ds.split("test")[:10]]
    assert len(set(first)) > 2  # shuffled: the first rows are not one label's
    assert sorted(ex.id for ex in ds.split("test")) == sorted(f"test{i}" for i in range(30))


@pytest.mark.slow
def test_an_interactive_csv_task_runs_20_rows_on_the_bundled_model(tmp_path, taskfit_home):
    data = tmp_path / "faq.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "reply"])
        for i in range(100):
            w.writerow([f"q{i}", f"What is {i} plus one?", f"It is {i + 1}."])
    out = tmp_path / "task.yaml"
    answers = "reply\nquestion\n\n\n\n\n\nn\n"  # the proposals, no goals, data stays here
    assert CliRunner().invoke(app, ["init", str(data), "--out", str(out)], input=answers).exit_code == 0
    assert CliRunner().invoke(app, ["validate", str(out)]).exit_code == 0
    res = CliRunner().invoke(app, ["eval", str(out), "--limit", "20", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("["):])
    assert {r["strategy"] for r in rows} == {"zero_shot", "few_shot"} and all(r["n"] == 20 for r in rows)
    assert all(0 <= r["score"] <= 1 and r["parse_fail_rate"] is not None for r in rows)
    res = CliRunner().invoke(app, ["run", str(out), "--limit", "20"])  # the same calls, from the cache
    assert res.exit_code == 0, res.output
    assert "few_shot" in res.stdout and "report: " in res.stdout
