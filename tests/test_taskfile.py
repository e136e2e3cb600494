import pytest

from taskfit.errors import TaskfitError
from taskfit.taskfile import load_task


def test_loads_shorthand_forms(make_task):
    task = load_task(make_task(metrics=["accuracy", {"fuzzy": {"threshold": 0.8}}]))
    c = task.config
    assert [m.name for m in c.metrics] == ["accuracy", "fuzzy"]
    assert c.metrics[1].options == {"threshold": 0.8}
    assert [s.label() for s in c.strategies] == ["zero_shot", "few_shot_balanced"]
    assert c.strategies[1].options == {"k": 2, "selection": "balanced"}


def test_unknown_metric_lists_known_ones(make_task):
    with pytest.raises(TaskfitError) as e:
        load_task(make_task(metrics=["acuracy"]))
    msg = str(e.value)
    assert "task.yaml" in msg and "metrics[0]" in msg and "'acuracy'" in msg
    assert "exact_match" in msg and "token_f1" in msg


def test_unknown_strategy_and_backend(make_task):
    with pytest.raises(TaskfitError, match="unknown strategy 'zero_shoot'"):
        load_task(make_task(strategies=["zero_shoot"]))
    with pytest.raises(TaskfitError, match="unknown backend 'nope'"):
        load_task(make_task(models=[{"backend": "nope"}]))


def test_invalid_keys_named(make_task):
    with pytest.raises(TaskfitError) as e:
        load_task(make_task(outptu="label"))
    assert "outptu" in str(e.value)


def test_bad_yaml_names_line(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\ndata: [\n  - a\n  b: c\n")
    with pytest.raises(TaskfitError) as e:
        load_task(p)
    assert str(p) in str(e.value) and "invalid YAML" in str(e.value)


def test_duplicate_rows_need_ids(make_task):
    with pytest.raises(TaskfitError, match="share the row name"):
        load_task(make_task(strategies=[{"name": "few_shot", "selection": "knn"}, {"name": "few_shot", "selection": "knn"}]))


def test_a_curve_names_a_tuning_row(make_task):
    task = load_task(make_task(tuning=[{"method": "full", "objective": "classify", "name": "enc"}],
                               curve=[{"tuning": "enc", "sizes": [50, 100]}]))
    assert [(c.tuning, c.sizes) for c in task.config.curve] == [("enc", [50, 100])]
    with pytest.raises(TaskfitError) as e:
        load_task(make_task(tuning=[{"method": "full", "objective": "classify", "name": "enc"}],
                            curve=[{"tuning": "encoder", "sizes": [50]}]))
    msg = str(e.value)
    assert "task.yaml" in msg and "curve" in msg and "tuning 'encoder' is not a row of `tuning:` (enc)" in msg
    with pytest.raises(TaskfitError, match=r"curve.0.sizes: .*give positive numbers of rows"):
        load_task(make_task(tuning=[{"method": "full", "objective": "classify", "name": "enc"}],
                            curve=[{"tuning": "enc", "sizes": [0]}]))
