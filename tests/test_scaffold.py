"""`taskfit init`: a task file proposed from a data file, interactively or from flags, that validates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.errors import TaskfitError
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
    # ..., keep the composed instruction (no sentence, no interview, accept it), ...
    answers = "reply\nquestion\n\n\n\n\n0.7\n\n800\n\ny\n"
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
    answers = "reply\nquestion\n\n\n\n\n\n\n\n\nn\n"  # the proposals, no goals, data stays here
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


def _grading_rows(n: int, start: int = 0) -> str:
    """Short-answer grading rows as a data set ships them: an answer id, a question id shared by many rows, a
    list of every reference answer, an opaque code, and the fields a grader reads."""
    rows = []
    for i in range(start, start + n):
        q = i % 7
        rows.append({"question": f"Why does ice {q} float on water?", "reference_answer": "Ice is less dense than water.",
                     "student_answer": f"Because it is lighter, student {i}.", "label": "correct" if i % 5 < 2 else "incorrect",
                     "id": f"EM.{q}b.{i}.1", "question_id": f"EM_{q}b", "answer_code": f"x{i:04d}-k",
                     "all_reference_answers": ["Ice is less dense than water.", "Ice floats."]})
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def grading_folder(tmp_path):
    folder = tmp_path / "grading"
    folder.mkdir()
    (folder / "train.jsonl").write_text(_grading_rows(240))
    (folder / "test.jsonl").write_text(_grading_rows(60, start=240))
    return folder


def test_identifiers_and_lists_are_not_inputs_and_the_prompt_reads_well(grading_folder, tmp_path, taskfit_home):
    out = tmp_path / "task.yaml"
    res = CliRunner().invoke(app, ["init", str(grading_folder / "train.jsonl"), "--out", str(out), "--yes"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    config = yaml.safe_load(text)
    assert config["inputs"] == ["question", "reference_answer", "student_answer"]
    assert "# id left out: looks like an identifier (its name; 240 distinct values, 100% unique)" in text
    assert "# question_id left out: looks like an identifier (its name; 7 distinct values, 3% unique)" in text
    assert "# answer_code left out: looks like an identifier (100% unique codes)" in text
    assert "# all_reference_answers left out: holds a list in each row, not text" in text
    prompt = config["prompt"]
    assert prompt["instruction"] == ("Decide whether the student answer is correct, given the question and the "
                                     "reference answer.")
    assert prompt["input_template"] == ("Question: {{ question }}\nReference answer: {{ reference_answer }}\n"
                                        "Student answer: {{ student_answer }}")
    assert prompt["response_prefix"] == "Answer:"
    assert config["calibrate"] is True and config["labels"] == ["correct", "incorrect"]
    tuned = config["tuning"][0]
    assert tuned["objective"] == "classify" and tuned["max_length"] == 96 and "train_limit" not in tuned
    assert "# max_length 96: 95% of inputs are up to about" in text and "# training: about" in text
    assert "tuning minilm+full: about" in res.output  # the training time is said before any training
    check = CliRunner().invoke(app, ["validate", str(out)])
    assert check.exit_code == 0, check.output


def test_a_description_and_named_inputs_are_taken_as_given(grading_folder, tmp_path, taskfit_home):
    out = tmp_path / "task.yaml"
    res = CliRunner().invoke(app, ["init", str(grading_folder / "train.jsonl"), "--out", str(out), "--yes",
                                   "--describe", "grade a pupil's answer against the teacher's",
                                   "--input", "question", "--input", "question_id", "--input", "student_answer"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    config = yaml.safe_load(text)
    assert config["inputs"] == ["question", "question_id", "student_answer"] and "# id left out: looks like" in text
    assert "# question_id is an input as asked, though it looks like an identifier (its name;" in text
    assert config["description"] == "grade a pupil's answer against the teacher's"
    assert config["prompt"]["instruction"] == "Grade a pupil's answer against the teacher's."
    assert config["prompt"]["input_template"].splitlines()[1] == "Question id: {{ question_id }}"


def test_instructions_from_field_names_and_labels(tmp_path):
    def instruction(rows):
        data = tmp_path / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return propose(data).instruction

    boolq = [{"id": f"b{i}", "question": f"is {i} even", "passage": "p", "answer": ["yes", "no"][i % 2]}
             for i in range(12)]
    assert instruction(boolq) == "Answer the question with yes or no, given the passage."
    intents = [{"text": f"where is my card {i}", "intent": f"intent_{i % 4}"} for i in range(16)]
    assert instruction(intents) == "Choose the intent of the text."
    math = [{"uuid": f"u{i}", "question": f"{i} + 1?", "answer": str(i + 1)} for i in range(12)]
    assert instruction(math) == "Answer the question with a number."


def test_a_big_train_split_is_capped_to_the_training_time(tmp_path):
    from taskfit.scaffold import TUNE_MINUTES, tuning_plan

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"a long review {i} " + "word " * 200, "label": ["good", "bad"][i % 2]})
                            + "\n" for i in range(5000)))
    p = propose(data)
    plan = tuning_plan(p, 4000)
    assert plan.rows < 4000 and plan.entry["train_limit"] == plan.rows and plan.of_rows == 4000
    assert plan.minutes <= TUNE_MINUTES < plan.minutes_all and plan.entry["epochs"] == 3
    assert plan.max_length == 288 and "raise `train_limit`" in plan.note()


def test_the_model_interviews_the_user_and_drafts_the_instruction(grading_folder, tmp_path, taskfit_home):
    calls = tmp_path / "calls.jsonl"
    model = tmp_path / "interviewer.yaml"
    model.write_text(yaml.safe_dump({"backend": "scripted", "script": {"call_log": str(calls), "replies": {
        # the newest answer in the conversation picks the reply: the first key found wins
        "Spelling does not matter": "INSTRUCTION: As a science teacher, mark the student answer correct when it "
                                    "states the reference answer's idea, whatever the spelling.",
        "a science teacher": "What should the grader ignore?",
        "Ask me one short question": "Who grades these answers?\nI ask because the tone depends on it."}}},
        sort_keys=False))
    out = tmp_path / "task.yaml"
    # field, inputs, no sentence, interview: yes, two answers, accept the draft, no goals, data stays here
    answers = "\n\n\ny\na science teacher\nSpelling does not matter\n\n\n\n\n\nn\n"
    res = CliRunner().invoke(app, ["init", str(grading_folder / "train.jsonl"), "--out", str(out),
                                   "--model", str(model)], input=answers)
    assert res.exit_code == 0, res.output
    assert "Who grades these answers?" in res.output and "What should the grader ignore?" in res.output
    assert "I ask because" not in res.output  # one question at a time, its first line
    text = out.read_text()
    instruction = yaml.safe_load(text)["prompt"]["instruction"]
    assert instruction.startswith("As a science teacher, mark the student answer correct")
    assert "  # asked: Who grades these answers? answered: a science teacher\n" in text
    assert "# drafted by scripted:" in text and "from the answers above" in text
    sent = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(sent) == 3 and all(c["kind"] == "generate" for c in sent)
    assert "My draft instruction: Decide whether the student answer is correct" in sent[0]["prompt"]
    assert "a science teacher" in sent[1]["prompt"] and "Spelling does not matter" in sent[2]["prompt"]
    assert CliRunner().invoke(app, ["validate", str(out)]).exit_code == 0


def test_an_interview_ends_with_a_draft_after_the_last_question(grading_folder):
    from taskfit.backends.scripted import ScriptedBackend
    from taskfit.cache import CallCache
    from taskfit.db import connect
    from taskfit.interview import ASKING, DONE, MAX_QUESTIONS, interview
    from taskfit.lm import LM

    def reply(request):  # continues the prefilled reply: a question, or the draft after "INSTRUCTION:"
        last = request.messages[-1]
        assert last["role"] == "assistant" and last["content"] in (ASKING, DONE)
        return " Grade kindly." if last["content"] == DONE else f" Number {len(request.messages)}?"

    lm = LM(ScriptedBackend({}, reply=reply), CallCache(connect("sqlite://")))
    asked = []
    result = interview(lm, propose(grading_folder / "train.jsonl"), lambda q: asked.append(q) or "yes")
    assert len(result.questions) == len(asked) == MAX_QUESTIONS and result.answers == ["yes"] * MAX_QUESTIONS
    assert asked == ["Number 3?", "Number 5?", "Number 7?"]  # system, opening (+ question, answer) each time
    assert result.instruction == "Grade kindly."
    silent = interview(lm, propose(grading_folder / "train.jsonl"), lambda q: "")  # a blank answer ends it
    assert len(silent.questions) == 1 and silent.instruction == "Grade kindly."


def test_an_interviewer_file_that_is_not_a_model_entry_names_the_file(grading_folder, tmp_path, taskfit_home):
    model = tmp_path / "interviewer.yaml"
    model.write_text("backend: scripted\nscritp: {default: hi}\n")
    out = tmp_path / "task.yaml"
    res = CliRunner().invoke(app, ["init", str(grading_folder / "train.jsonl"), "--out", str(out), "--model",
                                   str(model)], input="\n\n\ny\n")
    assert res.exit_code != 0 and not out.exists()
    assert isinstance(res.exception, TaskfitError)  # the command line prints it without a traceback
    assert str(res.exception).startswith(f"{model}: not a model entry") and "scritp" in str(res.exception)
