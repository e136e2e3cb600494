import pytest

from taskfit.errors import TaskfitError
from taskfit.parsing import normalize, parse_json, parse_label, parse_output, parse_regex
from taskfit.taskfile import ParseConfig

LABELS = ["positive", "negative", "neutral"]


def test_normalize_is_squad_style():
    assert normalize("  The Quick, brown FOX!  ") == "quick brown fox"
    assert normalize("an apple\tand\na pear") == "apple and pear"
    assert normalize("“London.”") == "london"
    assert normalize("theatre") == "theatre"  # articles only as whole words


@pytest.mark.parametrize("text", ["positive", "Positive.", '"positive"', "Answer: positive", "**Positive**",
                                  "Sentiment: POSITIVE!"])
def test_label_exact_forms(text):
    assert parse_label(text, LABELS, {}).value == "positive"


def test_label_alias_maps_to_canonical_label():
    r = parse_label("pos", LABELS, {"positive": ["pos", "good"]})
    assert r == parse_label("Good.", LABELS, {"positive": ["pos", "good"]})
    assert r.value == "positive" and not r.failed


def test_label_earliest_mention_wins():
    r = parse_label("The review is negative, not positive.", LABELS, {})
    assert r.value == "negative"


def test_label_prefers_longer_spelling_at_same_position():
    labels = ["positive", "very positive"]
    assert parse_label("I'd say very positive overall", labels, {}).value == "very positive"
    assert parse_label("I'd say positive overall", labels, {}).value == "positive"


def test_label_needs_whole_words():
    assert parse_label("That is unpositive", LABELS, {}).failed
    assert parse_label("nonnegative", LABELS, {}).value is None


def test_label_failure_when_nothing_matches():
    r = parse_label("I cannot tell.", LABELS, {})
    assert r.failed and r.value is None


def test_letter_labels_survive_article_removal():
    letters = ["A", "B", "C", "D"]
    assert parse_label("(A)", letters, {}).value == "A"
    assert parse_label("The answer is (C).", letters, {}).value == "C"


def test_regex_group_or_whole_match():
    assert parse_regex("score: 7/10 and 9/10", r"(\d+)/10").value == "7"
    assert parse_regex("score: 7/10", r"\d+/10").value == "7/10"
    assert parse_regex("no digits", r"(\d+)").failed


def test_regex_skips_matches_without_group_one():
    assert parse_regex("x y=3", r"x(\d)?|y=(\d)").failed
    assert parse_regex("a1 b2", r"(?:b(\d)|a)").value == "2"


def test_json_in_fence_with_prose():
    text = 'Sure! Here it is:\n```json\n{"city": "Zürich", "pop": 421878}\n```\nAnything else?'
    assert parse_json(text, None).value == '{"city": "Zürich", "pop": 421878}'
    assert parse_json(text, "city").value == "Zürich"
    assert parse_json(text, "pop").value == "421878"


def test_json_dotted_field_and_missing_field():
    text = 'result: {"a": {"b": {"c": true}}, "items": [{"name": "x"}]}'
    assert parse_json(text, "a.b.c").value == "true"
    assert parse_json(text, "a.b").value == '{"c": true}'
    assert parse_json(text, "items.0.name").value == "x"
    assert parse_json(text, "a.z").failed


def test_json_skips_broken_brackets_and_fails_without_json():
    assert parse_json("[see note] then [1, 2]", None).value == "[1, 2]"
    assert parse_json("{not json}", None).failed
    assert parse_json("plain text", None).failed


def test_output_auto_uses_labels_or_text():
    assert parse_output("Negative", ParseConfig(), LABELS, {}).value == "negative"
    assert parse_output("  Paris \n", ParseConfig(), None, {}).value == "Paris"
    assert parse_output("   ", ParseConfig(), None, {}).failed


def test_output_final_line_applies_first():
    text = "Let me think. 3 + 4 = 7, so not 9.\n\nAnswer: 7\n\n"
    cfg = ParseConfig(type="regex", pattern=r"(\d+)", final_line=True)
    assert parse_output(text, cfg, None, {}).value == "7"
    assert parse_output(text, ParseConfig(type="regex", pattern=r"(\d+)"), None, {}).value == "3"


def test_output_dispatches_json():
    cfg = ParseConfig(type="json", field="answer")
    assert parse_output('{"answer": 42}', cfg, None, {}).value == "42"


def test_output_config_errors():
    with pytest.raises(TaskfitError, match="pattern"):
        parse_output("x", ParseConfig(type="regex"), None, {})
    with pytest.raises(TaskfitError, match="labels"):
        parse_output("x", ParseConfig(type="label"), None, {})
    with pytest.raises(TaskfitError, match="not a valid regex"):
        parse_regex("x", "(")


def test_text_answers_lose_lead_ins_and_quotes():
    from taskfit.parsing import parse_text

    assert parse_text('The answer to this question is: "electric power"').value == "electric power"
    assert parse_text("The answer is: 1").value == "1"
    assert parse_text("Answer: London, England").value == "London, England"
    assert parse_text('"Paris"').value == "Paris"
    assert parse_text("answering machines are old").value == "answering machines are old"
    assert parse_text("   ").failed
