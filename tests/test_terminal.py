"""Model output and data never send control characters to the terminal: every printing command is run against
a store whose answers, inputs and targets hold escape sequences, and no such byte may reach stdout or stderr."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.terminal import safe_text

# an OSC 8 hyperlink, a clear-screen CSI, a C1 CSI, a right-to-left override and a bell
HOSTILE = "\x1b]8;;http://evil.example\x1b\\click\x1b[2J\x9b31m\u202eevil\x07"
# what may never be written: C0 but tab and newline, DEL, C1, bidi marks, overrides and isolates
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_safe_text_shows_each_control_character_as_its_escape():
    assert safe_text("a\tb\nc") == "a\tb\nc"
    assert safe_text(HOSTILE) == ("\\x1b]8;;http://evil.example\\x1b\\click\\x1b[2J\\x9b31m\\u202eevil\\x07")
    assert not UNSAFE.search(safe_text("".join(map(chr, range(0x100))) + "\u200e\u2066\u061c"))


@pytest.fixture
def hostile_task(make_task, tmp_path):
    rows = [{"id": "h1", "text": f"great {HOSTILE}", "label": f"positive {HOSTILE}"},
            {"id": "h2", "text": "terrible", "label": "negative"},
            {"id": "h3", "text": "great again", "label": "positive"}]
    write_jsonl(tmp_path / "data" / "hostile-test.jsonl", rows)
    write_jsonl(tmp_path / "data" / "hostile-train.jsonl", [{**r, "id": f"t{i}-{r['id']}"} for i in range(4)
                                                            for r in rows])
    model = {"backend": "scripted", "name": "fake",
             "script": {"replies": {"great": f"positive {HOSTILE}", "terrible": HOSTILE}, "default": HOSTILE}}
    return make_task(data={"train": "data/hostile-train.jsonl", "test": "data/hostile-test.jsonl"},
                     labels=None, output_mode="generate", metrics=["exact_match"], models=[model],
                     strategies=["zero_shot", {"name": "few_shot", "k": 2}])


def _clean(res) -> str:
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert res.exit_code == 0, (text, res.exception)
    assert not UNSAFE.search(text), [m[0] for m in UNSAFE.finditer(text)]
    return text


def _evaluated(runner: CliRunner, task) -> str:
    """eval prints the progress log and the leaderboard; returns the run id of its first row (from --json,
    which is for programs: JSON escapes the characters)."""
    assert "zero_shot" in _clean(runner.invoke(app, ["eval", str(task)]))
    return json.loads(runner.invoke(app, ["eval", str(task), "--json"]).stdout)[0]["run_id"]


def test_eval_show_and_runs_send_no_control_characters(hostile_task, taskfit_home):
    runner = CliRunner()
    run_id = _evaluated(runner, hostile_task)
    shown = _clean(runner.invoke(app, ["show", run_id]))
    assert "\\x1b]8;;http://evil.example" in shown  # the text is shown, with its escapes visible
    assert "\\x1b]8;;http://evil.example" in _clean(runner.invoke(app, ["show", run_id, "--example", "h1"]))
    _clean(runner.invoke(app, ["runs"]))


def test_report_and_optimize_send_no_control_characters(hostile_task, taskfit_home, tmp_path):
    runner = CliRunner()
    _evaluated(runner, hostile_task)
    _clean(runner.invoke(app, ["report", str(hostile_task), "--out", str(tmp_path / "r.html")]))
    optimized = _clean(runner.invoke(app, ["optimize", str(hostile_task), "--budget", "12",
                                           "--strategies", "zero_shot,few_shot"]))
    opt_id = optimized.split("--strategy optimized:")[1].split()[0]
    _clean(runner.invoke(app, ["optimizations"]))
    _clean(runner.invoke(app, ["optimizations", opt_id]))


@pytest.mark.slow  # init checks the task file it writes: about 12 s
def test_init_previews_data_without_control_characters(tmp_path, taskfit_home):
    rows = [{"id": f"r{i}", "text": f"review {i} {HOSTILE}", "label": ["positive", "negative"][i % 2]}
            for i in range(12)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    # field to predict, inputs, the task's sentence, no interview, the composed instruction, then the goal
    # questions left blank, data may not leave
    res = CliRunner().invoke(app, ["init", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "t.yaml")],
                             input="label\n" + "\n" * 8 + "n\n")
    shown = _clean(res)
    assert "review 0" in shown and "\\x1b]8;;" in shown  # the rows were shown, with their escapes visible


def test_an_error_quoting_data_sends_no_control_characters(make_task, tmp_path, capfd, monkeypatch):
    from taskfit.cli import main

    # the error lists the row's field names, as the file spells them
    write_jsonl(tmp_path / "data" / "bad.jsonl", [{"id": "a", f"txt{HOSTILE}": "fine", "label": "positive"}])
    monkeypatch.setattr(sys, "argv", ["taskfit", "validate", str(make_task(data={"test": "data/bad.jsonl"}))])
    with pytest.raises(SystemExit) as e:
        main()
    err = capfd.readouterr().err
    assert e.value.code == 2 and "missing field 'text'" in err and "txt\\x1b]8;;" in err
    assert not UNSAFE.search(err)
