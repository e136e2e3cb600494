"""The runner with a scripted model: caching, storage, resume, label scoring vs generation, leaderboard."""

import pytest

from taskfit.backends import backends
from taskfit.backends.scripted import ScriptedBackend
from taskfit.leaderboard import JSON_KEYS, rows
from taskfit.runner import BackendPool, evaluate
from taskfit.study import prepare, select_arms


@pytest.fixture
def workspace(store_workspace):
    """Every test here (cache, store, resume, leaderboard) runs on SQLite and on PostgreSQL."""
    return store_workspace


class CountingPool(BackendPool):
    """Hands out one ScriptedBackend per model so tests can count the requests it received."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.backend: ScriptedBackend | None = None
        self.fail_after = fail_after

    def get(self, spec):
        if self.backend is None:
            self.backend = backends.get(spec.backend)(spec)
            if self.fail_after is not None:
                real, limit = self.backend.score, self.fail_after

                def flaky(requests):
                    if len(self.backend.requests) + len(requests) > limit:
                        raise KeyboardInterrupt  # a user pressing Ctrl-C mid-run
                    return real(requests)

                self.backend.score = flaky
        return self.backend


def _evaluate(workspace, path, pool, **kw):
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace,
                    pool=pool, **kw)
    return workspace.runs, runs


def test_label_scoring_and_leaderboard(make_task, workspace):
    store, runs = _evaluate(workspace, make_task(), CountingPool())
    table = rows(workspace, runs)
    assert len(table) == 2
    for r in table:
        assert set(JSON_KEYS) <= set(r.to_json())
        assert r.n == 8 and r.ci_low <= r.score <= r.ci_high
        assert r.calls == 8 and r.parse_fail_rate == 0
    # the script makes 'great' positive and 'terrible' negative; 4 rows contain neither -> tie -> first label
    preds = store.predictions(runs[0].id)
    by_id = {p.example_id: p for p in preds}
    assert by_id["r0"].answer == "positive" and by_id["r3"].answer == "negative"
    assert table[0].p_vs_best is None and table[1].p_vs_best is not None


def test_second_run_is_all_cache_hits_with_same_results(make_task, workspace):
    path = make_task()
    pool = CountingPool()
    store, first = _evaluate(workspace, path, pool)
    sent = len(pool.backend.requests)
    store, second = _evaluate(workspace, path, pool)
    assert len(pool.backend.requests) == sent  # no new model calls
    assert [r.id for r in first] == [r.id for r in second]  # the finished runs, reused
    # a new run whose prompts are those of the first (the description reaches no prompt here): all from the cache
    store, third = _evaluate(workspace, make_task(description="other"), pool)
    assert len(pool.backend.requests) == sent and not {r.id for r in first} & {r.id for r in third}
    a = rows(workspace, first)
    b = rows(workspace, third)
    assert [r.score for r in a] == [r.score for r in b]
    assert all(r.cache_hits == r.calls for r in b)


def test_generate_mode_parses_and_counts_failures(make_task, workspace):
    path = make_task(output_mode="generate", strategies=["zero_shot"])
    store, runs = _evaluate(workspace, path, CountingPool())
    (row,) = rows(workspace, runs)
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    assert preds["r0"].output == "Positive." and preds["r0"].answer == "positive"
    assert preds["r1"].parse_failed == 1 and preds["r1"].answer is None and preds["r1"].score == 0
    assert row.parse_fail_rate == pytest.approx(3 / 8)  # r1, r2, r5 get "hmm"


def test_interrupted_run_resumes_without_repeating_calls(make_task, monkeypatch, workspace):
    from taskfit import runner

    monkeypatch.setattr(runner, "CHUNK", 3)
    path = make_task(strategies=["zero_shot"])
    pool = CountingPool(fail_after=6)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(workspace, path, pool)
    store = workspace.runs
    (partial,) = store.list()
    assert partial.status == "running" and store.progress(partial.id) == 6
    sent_before = list(pool.backend.requests)
    pool.fail_after = None
    pool2 = CountingPool()
    store, runs = _evaluate(workspace, path, pool2)
    assert runs[0].id == partial.id and runs[0].status == "done"
    assert len(pool2.backend.requests) == 2  # only the two examples never scored
    prompts_before = {str(r.messages) for r in sent_before}
    assert not prompts_before & {str(r.messages) for r in pool2.backend.requests}
    _, clean = _evaluate(workspace, make_task(strategies=["zero_shot"], description="other"), CountingPool())
    assert [p.answer for p in store.predictions(runs[0].id)] == [p.answer for p in store.predictions(clean[0].id)]


def test_failed_calls_are_recorded_not_fatal(make_task, workspace):
    script = {"scores": {"great": {"positive": -0.1}}, "fail_on": "terrible"}
    path = make_task(models=[{"backend": "scripted", "script": script}], strategies=["zero_shot"])
    store, runs = _evaluate(workspace, path, CountingPool())
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    assert preds["r3"].failed == 1 and preds["r3"].error == "scripted failure"
    assert preds["r0"].failed == 0 and runs[0].status == "done"


def test_calibration_removes_label_bias(make_task, workspace):
    # the scripted model prefers 'positive' by 2 nats on a content-free input; on 'terrible' rows by only 0.5
    script = {"scores": {"terrible": {"positive": -1.5, "negative": -2.0}, "": {"positive": -1.0, "negative": -3.0}}}
    path = make_task(models=[{"backend": "scripted", "script": script}], strategies=["zero_shot"], calibrate=True)
    store, runs = _evaluate(workspace, path, CountingPool())
    preds = {p.example_id: p for p in store.predictions(runs[0].id)}
    assert preds["r3"].answer == "negative"
    assert preds["r3"].calls == 2  # the example and its content-free twin
    # zero-shot's content-free prompt is the same for all 8 rows: sent once, each row charged an eighth
    calib = [c for c in preds["r3"].trace["calls"] if c["step"] == "calibration"][0]
    example = [c for c in preds["r3"].trace["calls"] if c["step"] == "score"][0]
    assert calib["shared_by"] == 8 and example["shared_by"] == 1
    assert calib["tokens_in"] == pytest.approx(len("Classify the review.\n\nReview: N/A\n\nAnswer with exactly one of: "
                                                   "negative, positive.".split()) / 8)
    path = make_task(models=[{"backend": "scripted", "script": script}], strategies=["zero_shot"], calibrate=False)
    store, runs = _evaluate(workspace, path, CountingPool())
    assert {p.answer for p in store.predictions(runs[0].id)} == {"positive"}


def test_verdict_names_best_and_ties():
    from taskfit.leaderboard import LeaderboardRow, verdict

    table = [LeaderboardRow(**r, ci_low=0.0, ci_high=1.0) for r in (
        {"strategy": "structured", "model": "m", "score": 0.8, "p_vs_best": None, "cost_per_1k": 0, "time_per_1k_s": 90,
         "tokens_in": 250, "tokens_out": 0},
        {"strategy": "zero_shot", "model": "m", "score": 0.79, "p_vs_best": 0.5, "cost_per_1k": 0, "time_per_1k_s": 50,
         "tokens_in": 110, "tokens_out": 0},
        {"strategy": "few_shot", "model": "m", "score": 0.6, "p_vs_best": 0.001, "cost_per_1k": 0, "time_per_1k_s": 60,
         "tokens_in": 300, "tokens_out": 0},
    )]
    text = verdict(table)
    assert text.startswith("Best: structured x m (0.800).")
    assert "Not significantly different (p >= 0.05): zero_shot x m." in text and "few_shot" not in text
    assert "Cheapest of those: zero_shot x m" in text


def test_verdict_does_not_call_a_row_cheaper_on_a_time_gap_inside_load_noise():
    from taskfit.leaderboard import LeaderboardRow, verdict

    def row(name, score, p, seconds):  # two encoders: the same tokens, model time measured on a shared machine
        return LeaderboardRow(strategy="classifier", model=name, score=score, p_vs_best=p, cost_per_1k=0,
                              time_per_1k_s=seconds, tokens_in=25, tokens_out=0, ci_low=0.0, ci_high=1.0)

    text = verdict([row("minilm+full", 0.83, None, 21), row("minilm+lora-head", 0.80, 0.36, 19)])
    assert "Cheapest of those" not in text
    assert "None is cheaper than the best beyond the uncertainty of measured time (±25%" in text
    text = verdict([row("minilm+full", 0.83, None, 21), row("minilm+lora-head", 0.80, 0.36, 9)])
    assert "Cheapest of those: classifier x minilm+lora-head (9.0 s per 1k queries vs 21 s)" in text
