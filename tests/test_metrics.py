import pytest

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import build_metric, metrics


def ex(target, *aliases, id="1"):
    return Example(id=id, fields={}, target=target, answers=(target, *aliases), source="data.jsonl:3")


def test_registry_lists_builtins():
    assert {"exact_match", "accuracy", "contains", "regex", "numeric", "token_f1", "fuzzy", "json_valid",
            "json_match", "custom"} <= set(metrics.names())


def test_unknown_metric_and_unknown_option():
    with pytest.raises(TaskfitError, match="unknown metric 'nope'"):
        build_metric("nope", {})
    with pytest.raises(TaskfitError, match=r"'exact_match'.*'lowercase'"):
        build_metric("exact_match", {"lowercase": True})
    with pytest.raises(TaskfitError, match=r"'token_f1'.*'x'"):
        build_metric("token_f1", {"x": 1})


def test_mistyped_option():
    with pytest.raises(TaskfitError, match="normalize"):
        build_metric("exact_match", {"normalize": "yes"})


def test_exact_match_normalizes():
    m = build_metric("exact_match", {})
    assert m.binary
    assert m("London", ex("London")) == 1.0
    assert m("london.", ex("London")) == 1.0
    assert m("The London", ex("London")) == 1.0
    assert m("London, England", ex("London")) == 0.0
    assert m(None, ex("London")) == 0.0


def test_exact_match_aliases_and_accuracy_name():
    m = build_metric("accuracy", {})
    assert m("NYC", ex("New York City", "NYC")) == 1.0
    assert m("Boston", ex("New York City", "NYC")) == 0.0


def test_exact_match_first_segment():
    m = build_metric("exact_match", {"first_segment": True})
    assert m("London, England", ex("London")) == 1.0
    assert m("London; capital of the UK", ex("London")) == 1.0
    assert m("London\nbecause...", ex("London")) == 1.0
    assert m("Paris, Texas", ex("Paris, Texas")) == 1.0  # the whole prediction still counts
    assert m("England, London", ex("London")) == 0.0


def test_exact_match_without_normalization():
    m = build_metric("exact_match", {"normalize": False})
    assert m(" London ", ex("London")) == 1.0
    assert m("london", ex("London")) == 0.0


def test_exact_match_letter_answers():
    m = build_metric("exact_match", {})
    assert m("(A)", ex("A")) == 1.0
    assert m("", ex("A")) == 0.0
    assert m("B", ex("A")) == 0.0


def test_contains_word_boundaries():
    m = build_metric("contains", {})
    assert m("I believe it is Paris, France.", ex("Paris")) == 1.0
    assert m("Parisian food", ex("Paris")) == 0.0
    assert m("the new york times", ex("New York")) == 1.0
    assert m(None, ex("Paris")) == 0.0


def test_regex_metric():
    m = build_metric("regex", {"pattern": r"[a-z]+@[a-z]+\.com"})
    assert m("  bob@example.com\n", ex("")) == 1.0
    assert m("mail bob@example.com", ex("")) == 0.0
    assert m("BOB@EXAMPLE.COM", ex("")) == 0.0
    assert build_metric("regex", {"pattern": r"[a-z]+@[a-z]+\.com", "flags": "i"})("BOB@EXAMPLE.COM", ex("")) == 1.0


def test_regex_metric_errors():
    with pytest.raises(TaskfitError, match="'pattern' is required"):
        build_metric("regex", {})
    with pytest.raises(TaskfitError, match="not a valid regex"):
        build_metric("regex", {"pattern": "("})
    with pytest.raises(TaskfitError, match="unknown flag"):
        build_metric("regex", {"pattern": "a", "flags": "q"})


def test_numeric_extraction_styles():
    m = build_metric("numeric", {})
    assert m("The answer is $1,234.50 dollars", ex("1234.5")) == 1.0
    assert m("She has 12 apples", ex("12")) == 1.0
    assert m("5.0", ex("5")) == 1.0
    assert m("It drops to -3 degrees", ex("-3")) == 1.0
    assert m("It drops to 3 degrees", ex("-3")) == 0.0
    assert m("First 4, then 7 more, so 11.", ex("11")) == 1.0
    assert m("no number here", ex("11")) == 0.0


def test_numeric_gsm8k_solutions():
    gold = ex("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18")
    m = build_metric("numeric", {})
    assert m("She makes $18 every day.", gold) == 1.0
    assert m("9 eggs, 2 dollars each\n#### 18", gold) == 1.0
    assert m("#### 18\nwait, that means 9 eggs", gold) == 1.0  # the #### answer beats the last number
    assert m("She makes $9 every day.", gold) == 0.0


def test_numeric_tolerance():
    assert build_metric("numeric", {})("3.3333", ex("3.3333333")) == 0.0
    assert build_metric("numeric", {"tolerance": 1e-3})("3.3333", ex("3.3333333")) == 1.0


def test_numeric_gold_without_number_names_the_row():
    with pytest.raises(TaskfitError, match=r"data.jsonl:3: .*no number"):
        build_metric("numeric", {})("5", ex("five"))


def test_token_f1_hand_computed():
    m = build_metric("token_f1", {})
    assert not m.binary
    # pred tokens: cat sat on mat (4); gold: cat sat (2); overlap 2 -> P=1/2, R=1, F1=2/3
    assert m("the cat sat on the mat", ex("The cat sat")) == pytest.approx(2 / 3)
    # overlap 1 (green) of 2 pred, 3 gold tokens -> P=1/2, R=1/3, F1=0.4
    assert m("green apple", ex("big green tree")) == pytest.approx(0.4)
    assert m("red", ex("blue")) == 0.0
    assert m("Blue!", ex("blue")) == 1.0
    # best over aliases
    assert m("green apple", ex("big green tree", "apple")) == pytest.approx(2 / 3)


def test_fuzzy_scores_and_threshold():
    m = build_metric("fuzzy", {})
    assert not m.binary
    assert m("kitten", ex("sitting")) == pytest.approx(0.6153846, abs=1e-6)  # 1 - 5/13 (Indel distance)
    assert m("Sitting.", ex("sitting")) == 1.0
    t = build_metric("fuzzy", {"threshold": 0.6})
    assert t.binary
    assert t("kitten", ex("sitting")) == 1.0
    assert build_metric("fuzzy", {"threshold": 0.7})("kitten", ex("sitting")) == 0.0
    with pytest.raises(TaskfitError, match="threshold"):
        build_metric("fuzzy", {"threshold": 80})


def test_json_valid():
    m = build_metric("json_valid", {})
    assert m('Here: ```json\n{"a": 1}\n```', ex("")) == 1.0
    assert m("{'a': 1}", ex("")) == 0.0
    assert m(None, ex("")) == 0.0


def test_json_match_fraction_of_gold_fields():
    gold = ex('{"name": "Ada Lovelace", "born": 1815, "field": "math"}')
    m = build_metric("json_match", {})
    assert not m.binary
    assert m('{"name": "ada lovelace.", "born": 1815, "field": "math"}', gold) == 1.0
    assert m('{"name": "Ada Lovelace", "born": 1816, "field": "math"}', gold) == pytest.approx(2 / 3)
    assert m('{"name": "Ada Lovelace", "born": "1815"}', gold) == pytest.approx(2 / 3)
    assert m("not json", gold) == 0.0


def test_json_match_selected_fields():
    gold = ex('{"name": "Ada", "born": 1815, "meta": {"ok": true}}')
    one = build_metric("json_match", {"fields": ["born"]})
    assert one.binary
    assert one('{"born": 1815, "name": "Bob"}', gold) == 1.0
    nested = build_metric("json_match", {"fields": ["meta.ok", "name"]})
    assert nested('{"meta": {"ok": 1}, "name": "Ada"}', gold) == 0.5  # true is not 1 in JSON
    with pytest.raises(TaskfitError, match="fields"):
        build_metric("json_match", {"fields": "born"})


def test_json_match_bad_gold():
    with pytest.raises(TaskfitError, match="not a JSON object"):
        build_metric("json_match", {})('{"a": 1}', ex("plain"))


def test_custom_metric_from_module(tmp_path, monkeypatch):
    (tmp_path / "my_scorers.py").write_text(
        "def half_credit(prediction, example):\n"
        "    return 0.5 if prediction.lower() in example.target.lower() else 0.0\n"
        "def too_big(prediction, example):\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_metric("custom", {"function": "my_scorers:half_credit"})
    assert not m.binary
    assert m("paris", ex("Paris, France")) == 0.5
    assert m("Rome", ex("Paris, France")) == 0.0
    assert m(None, ex("Paris")) == 0.0
    with pytest.raises(TaskfitError, match=r"returned 3"):
        build_metric("custom", {"function": "my_scorers.too_big"})("x", ex("y"))


def test_custom_metric_dotted_stdlib_path_and_binary():
    m = build_metric("custom", {"function": "operator.is_not", "binary": True})
    assert m.binary
    assert m("x", ex("y")) == 1.0


def test_custom_metric_bad_paths():
    with pytest.raises(TaskfitError, match="no_such_module_xyz"):
        build_metric("custom", {"function": "no_such_module_xyz:f"})
    with pytest.raises(TaskfitError, match="'operator'.*'nope'"):
        build_metric("custom", {"function": "operator:nope"})
    with pytest.raises(TaskfitError, match="'function' is required"):
        build_metric("custom", {})
