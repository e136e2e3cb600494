"""`taskfit eval --json` keeps the keys docs/json.md documents: a row's keys are a contract."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from taskfit.cli import app
from taskfit.leaderboard import TUNE_KEYS
from taskfit.types import JSON_KEYS, LeaderboardRow

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"


def documented() -> tuple[list[str], list[str], list[str]]:
    """(keys of every row, keys of fine-tuned rows only, keys of ``tune``) from the tables in docs/json.md."""
    text = DOC.read_text().split("\n## ")[0]  # the leaderboard rows; later sections document other outputs
    every, _, tuned = text.partition("Fine-tuned rows also have:")
    keys = lambda part: re.findall(r"^\| `(\w+)` \|", part, flags=re.M)  # noqa: E731
    tune_line = next(line for line in tuned.splitlines() if line.startswith("| `tune`"))
    listed = re.sub(r"\([^)]*\)", "", tune_line.split("|")[3])  # a key's explanation is in parentheses
    return keys(every), keys(tuned), re.findall(r"`(\w+)`", listed)


def test_eval_json_has_exactly_the_documented_keys_in_order(make_task, taskfit_home):
    every, tuned_only, _ = documented()
    assert tuned_only == ["tune"]
    res = CliRunner().invoke(app, ["eval", str(make_task()), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("[\n"):])
    assert len(rows) == 2
    for row in rows:
        assert list(row) == every  # the documented order, nothing added or missing
    assert every[: len(JSON_KEYS)] == list(JSON_KEYS)


def test_a_fine_tuned_row_adds_only_tune_with_the_documented_keys():
    every, tuned_only, tune_keys = documented()
    tune = {k: None for k in TUNE_KEYS}
    row = LeaderboardRow(strategy="zero_shot", model="tuned:ab12", score=0.5, ci_low=0.4, ci_high=0.6, tune=tune)
    assert list(row.to_json()) == every + tuned_only
    assert list(row.to_json()["tune"]) == tune_keys == list(TUNE_KEYS)


def test_per_example_adds_only_the_documented_keys_after_the_rows_keys(make_task, taskfit_home):
    every, _, _ = documented()
    section = DOC.read_text().split("## `--per-example`")[1].split("\n## ")[0]
    added = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert added == ["binary", "split", "limit", "examples"]
    res = CliRunner().invoke(app, ["eval", str(make_task()), "--json", "--per-example"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("[\n"):])
    for row in rows:
        assert list(row) == every + added
        assert list(row["examples"][0]) == ["id", "score", "answer", "target", "inputs", "parse_failed"]
