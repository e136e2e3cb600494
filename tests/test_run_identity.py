"""A run's identity comes from the validated task configuration, not the file's text: comments, formatting and
prices reuse the stored runs; what a model is asked makes new ones; runs stored under the old identity are found."""

import yaml
from sqlalchemy import text

from taskfit.report.data import latest_study_runs
from taskfit.runner import BackendPool, evaluate, run_key
from taskfit.study import prepare, select_arms


class CountingPool(BackendPool):
    """One scripted backend per model, so a test can count the requests it received."""

    def requests(self) -> int:
        return sum(len(b.requests) for b in self._loaded.values())


def _evaluate(workspace, path):
    pool = CountingPool()
    task, ds = prepare(path)
    records = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace,
                       pool=pool)
    return records, pool.requests()


def _edit(path, **changes):
    config = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config, sort_keys=True))  # a new key order too


def test_comment_formatting_and_prices_reuse_every_run(make_task, workspace):
    path = make_task()
    first, calls = _evaluate(workspace, path)
    assert calls > 0 and len(first) == 2
    path.write_text("# a comment the study does not read\n" + path.read_text() + "\n# and another\n")
    _edit(path, **{"costs.price_per_hour": 2.5, "costs.volume": "10k/month", "serve.max_batch": 8})
    path.write_text("# edited\n" + path.read_text())
    second, calls = _evaluate(workspace, path)
    assert calls == 0  # not one model call
    assert [r.id for r in second] == [r.id for r in first]
    assert len(workspace.runs.list()) == 2  # and no new run record


def test_a_new_instruction_makes_new_runs(make_task, workspace):
    path = make_task()
    first, _ = _evaluate(workspace, path)
    _edit(path, **{"prompt.instruction": "Classify the review's sentiment."})
    second, calls = _evaluate(workspace, path)
    assert calls > 0
    assert not {r.id for r in second} & {r.id for r in first}
    assert len(workspace.runs.list()) == 4


def test_runs_stored_under_the_file_text_hash_are_found_then_rekeyed(make_task, workspace):
    path = make_task()
    first, _ = _evaluate(workspace, path)
    task, ds = prepare(path)
    arms = select_arms(task, None, None)
    with workspace.runs.eng.begin() as conn:  # as the runs were stored before: keyed by the file's text
        for run, arm in zip(first, arms, strict=True):
            old = run_key(task, ds, arm, "test", None, run.config["mode"], legacy=True)
            assert old != run.key
            conn.execute(text("UPDATE runs SET key = :k, task_hash = :h WHERE id = :id"),
                         {"k": old, "h": task.legacy_hash, "id": run.id})
    second, calls = _evaluate(workspace, path)
    assert calls == 0 and [r.id for r in second] == [r.id for r in first]
    assert len(workspace.runs.list()) == 2
    path.write_text("# now a comment: the old text hash no longer matches, the re-keyed runs still do\n"
                    + path.read_text())
    third, calls = _evaluate(workspace, path)
    assert calls == 0 and [r.id for r in third] == [r.id for r in first]


def test_a_study_that_reuses_runs_reports_them_with_its_new_ones(make_task, workspace):
    path = make_task(strategies=["zero_shot"])
    (zero,), _ = _evaluate(workspace, path)
    _edit(path, strategies=["zero_shot", {"name": "few_shot", "k": 2, "selection": "balanced"}])
    second, calls = _evaluate(workspace, path)
    assert second[0].id == zero.id and calls > 0
    latest = latest_study_runs(workspace.runs, "tiny")
    assert {r.id for r in latest} == {r.id for r in second}
    new = next(r for r in second if r.id != zero.id)
    assert workspace.runs.reused_in(new.study) == {zero.id}
    from fastapi.testclient import TestClient

    from taskfit.ui.app import create_app

    local = "http://127.0.0.1"
    board = TestClient(create_app(workspace), base_url=local, headers={"Origin": local}).get(
        f"/leaderboard?study={new.study}").text
    assert zero.id in board and new.id in board  # the study's leaderboard in the browser has both rows


def test_a_reused_run_keeps_the_estimate_made_before_it_ran(make_task, workspace):
    from taskfit.estimate import compare_runs, comparison, estimate_arms

    path = make_task(strategies=["zero_shot"])
    task, ds = prepare(path)
    arms = select_arms(task, None, None)
    before = estimate_arms(task, ds, arms, split="test", limit=None, cache=workspace.cache)
    (run,), _ = _evaluate(workspace, path)
    (first,) = compare_runs(workspace.engine, before, [(run.strategy, run.model, run.id)])
    assert first["calls"] == (8, 8)
    again = estimate_arms(task, ds, arms, split="test", limit=None, cache=workspace.cache)  # all cached now
    assert again[0].calls == 0
    (reused,), _ = _evaluate(workspace, path)
    (second,) = compare_runs(workspace.engine, again, [(reused.strategy, reused.model, reused.id)])
    assert reused.id == run.id and second["calls"] == (8, 8)  # not "0 estimated, 8 made"
    assert comparison(workspace.engine, run.id)[0]["calls"] == 8
