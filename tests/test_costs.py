"""The cost model and the volume-aware recommendation, on fabricated leaderboard rows."""

import pytest

from taskfit.costs import MACHINE_HOURS, RowCost, Volume, break_even, parse_volume, row_cost, unit_of
from taskfit.recommend import recommend
from taskfit.types import ReportRow


def prompt_row(**extra):
    # the default study's shape: a 135M chat model scoring labels, 86 ms of model time per query
    base = {"strategy": "zero_shot", "model": "smollm2-135m", "n": 200, "score": 0.80, "ci_low": 0.74,
            "ci_high": 0.85, "p_vs_best": 0.20, "latency_p50_ms": 86.0, "tokens_in": 70.0, "tokens_out": 0.0,
            "cost_per_1k": 0.0, "time_per_1k_s": 86.0, "run_id": "p", "price_per_hour": 0.10}
    return ReportRow(**{**base, **extra})


def tuned_row(**extra):
    # a fine-tuned encoder: 2 minutes of training, 9.5 ms of model time per query
    base = {"strategy": "classifier", "model": "minilm+full", "n": 200, "score": 0.83, "ci_low": 0.77,
            "ci_high": 0.88, "p_vs_best": None, "latency_p50_ms": 9.5, "tokens_in": 0.0, "tokens_out": 0.0,
            "cost_per_1k": 0.0, "time_per_1k_s": 9.5, "run_id": "t", "price_per_hour": 0.10,
            "train_price_per_hour": 0.10, "tune": {"train_time_s": 120.0, "device": "cpu"}}
    return ReportRow(**{**base, **extra})


def study(tuned=None, prompt=None):
    """The tuned row, a prompt row tied with it, and a prompt row significantly worse than both."""
    worse = prompt_row(strategy="few_shot", score=0.60, ci_low=0.53, ci_high=0.67, p_vs_best=0.0001, run_id="w")
    return [tuned_row(**(tuned or {})), prompt_row(**(prompt or {})), worse]


def test_row_cost_prices_model_time_and_training():
    c = row_cost(tuned_row(), "$")
    assert c.training == pytest.approx(120 / 3600 * 0.10)
    assert c.per_query == pytest.approx(0.0095 / 3600 * 0.10)
    assert c.total(1000) == pytest.approx(c.one_time + 1000 * c.per_query)
    tokens = row_cost(prompt_row(cost_per_1k=2.0, price_per_hour=None), "$")
    assert tokens.per_query == pytest.approx(0.002) and tokens.one_time == 0


def test_break_even_between_a_prompt_and_a_tuned_row():
    p, t = row_cost(prompt_row(), "$"), row_cost(tuned_row(), "$")
    be = break_even(p, t)
    assert be == pytest.approx((120 * 0.10 / 3600) / ((0.086 - 0.0095) * 0.10 / 3600))  # ~1,570 queries
    assert p.total(be * 0.9) < t.total(be * 0.9) and t.total(be * 1.1) < p.total(be * 1.1)
    assert break_even(RowCost(0, 1, "$"), RowCost(5, 2, "$")) is None  # dearer per query: never
    assert break_even(RowCost(5, 2, "$"), RowCost(1, 1, "$")) == 0  # cheaper on both counts: always


def test_without_prices_costs_are_machine_hours_and_the_break_even_does_not_change():
    rows = [prompt_row(price_per_hour=None), tuned_row(price_per_hour=None, train_price_per_hour=None)]
    assert unit_of(rows) == MACHINE_HOURS
    hours = break_even(*(row_cost(r, MACHINE_HOURS) for r in rows))
    dollars = break_even(row_cost(prompt_row(), "$"), row_cost(tuned_row(), "$"))
    assert hours == pytest.approx(dollars)


def test_higher_volume_moves_the_recommendation_to_the_fine_tuned_row():
    table = study()
    low = recommend(table, volume=Volume(100))
    high = recommend(table, volume=Volume(1_000_000))
    assert low.choice == "prompting" and low.row.run_id == "p"
    assert high.choice == "fine_tune" and high.row.run_id == "t"
    assert high.text.startswith("At 1,000,000 queries, fine-tune: classifier x minilm+full scores 0.830")
    assert "Break-even: from about 1,600 queries" in high.text
    assert "Total cost of classifier x minilm+full at 1,000,000 queries: $0.27" in high.text
    assert high.break_even == pytest.approx(1568.6, rel=1e-3)


def test_a_dearer_serving_device_for_the_tuned_row_moves_it_back_to_the_prompt():
    table = study({"price_per_hour": 10.0})
    rec = recommend(table, volume=Volume(1_000_000))
    assert rec.choice == "prompting" and rec.row.run_id == "p"
    assert "never costs less than the best prompt row" in rec.text


def test_token_prices_count_too():
    table = study(prompt={"cost_per_1k": 0.5, "price_per_hour": None, "on_premise": False})
    assert recommend(table, volume=Volume(10_000)).row.run_id == "t"
    assert recommend(table, volume=Volume(1)).row.run_id == "p"


def test_a_latency_bound_sets_a_slow_row_aside():
    table = study()
    assert recommend(table, volume=Volume(100)).row.run_id == "p"
    rec = recommend(table, volume=Volume(100), latency_p50_ms=50)
    assert rec.row.run_id == "t"
    assert "Over the p50 latency bound of 50 ms, so not considered: zero_shot x smollm2-135m (86 ms)" in rec.text
    assert recommend(table, latency_p50_ms=5).choice == "none"


def test_a_significantly_better_row_is_not_traded_for_a_cheaper_one():
    table = study({"price_per_hour": 10.0}, {"p_vs_best": 0.001})
    assert recommend(table, volume=Volume(1_000_000)).row.run_id == "t"


def test_with_no_volume_the_text_gives_the_break_even_instead_of_a_free_pass():
    rec = recommend(study())
    assert rec.choice == "prompting"  # tied, and the least demanding
    assert "zero training cost" not in rec.text
    assert "Break-even: from about 1,600 queries the best fine-tuned row" in rec.text
    assert "Give a query volume (--volume)" in rec.text


@pytest.mark.parametrize("text, queries, per", [
    ("1000000", 1e6, ""), ("1,000,000", 1e6, ""), ("1e6", 1e6, ""), ("250k", 250e3, ""),
    ("1M/month", 1e6, "month"), ("50000 / day", 5e4, "day"),
])
def test_parse_volume(text, queries, per):
    assert parse_volume(text) == Volume(queries, per)


def test_parse_volume_rejects_nonsense():
    with pytest.raises(ValueError, match="not a query volume"):
        parse_volume("lots")


def test_the_report_tabulates_costs_and_plots_total_cost_against_volume():
    from taskfit.report import ReportData, render_html

    table = study()
    rec = recommend(table, volume=Volume(1_000_000))
    html = render_html(ReportData(title="t", metric="accuracy", rows=table, pairwise={}, breakdowns=[],
                                  recommendation=rec))
    costs = html[html.index('id="costs"'):html.index("</table>", html.index('id="costs"'))]
    assert "classifier x minilm+full (recommended)" in costs and "$0.27" in costs and "$2.39" in costs
    plot = html[html.index('id="plot-volume"'):]
    assert plot.count("<polyline") == 3  # every row (three here), one line each
    assert "break-even: 1,600 queries" in plot and "<title>1,000,000 queries</title>" in plot
    # how the costs were obtained, their margin and the volumes over which the pick holds
    assert "their timed part counts as ±25%" in " ".join(html.split())
    assert costs.count("measured time ±25%") == 3  # rows without a calibration: priced from measured time
    assert "the pick holds from about 900 queries up" in " ".join(html.split())


def test_collect_prices_rows_from_the_task_file(make_task, workspace):
    from taskfit.report import collect
    from taskfit.runner import evaluate
    from taskfit.study import prepare, select_arms
    from taskfit.taskfile import load_task

    path = make_task(costs={"price_per_hour": 0.5})
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    assert {r.price_per_hour for r in collect(workspace, runs).rows} == {0.5}  # the price stored with the run
    repriced = make_task(costs={"price_per_hour": 2.0},
                         models=[{"backend": "scripted", "name": "fake", "price_per_hour": 3.0, "script": {}}])
    rows = collect(workspace, runs, prices=load_task(repriced).config).rows
    assert {r.price_per_hour for r in rows} == {3.0}  # the model entry's own price wins


def test_report_command_prints_costs_at_the_volume(make_task, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    path = make_task(costs={"price_per_hour": 0.5})
    runner = CliRunner()
    assert runner.invoke(app, ["eval", str(path)]).exit_code == 0
    res = runner.invoke(app, ["report", str(path), "--volume", "2M/month", "--latency-p50-ms", "60000"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Cost at 2,000,000 queries a month" in res.output and "total" in res.output
    assert "(recommended)" in res.output and "report: " in res.output
    bad = runner.invoke(app, ["report", str(path), "--volume", "lots"])
    assert bad.exit_code != 0 and "not a query volume" in str(bad.exception)


def test_run_command_prices_its_report_at_the_volume(make_task, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    res = CliRunner().invoke(app, ["run", str(make_task()), "--volume", "250k", "--latency-p50-ms", "60000"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Cost at 250,000 queries" in res.output and "At 250,000 queries" in res.output
    assert list((taskfit_home / "reports").glob("tiny-*.html"))


def test_a_distilled_rows_teacher_bill_is_a_one_time_cost():
    distilled = tuned_row(tune={"train_time_s": 120.0, "distill": {"labelling": {"dollars": 4.0, "calls": 2000}}})
    c = row_cost(distilled, "$")
    assert c.labelling == pytest.approx(4.0) and c.one_time == pytest.approx(4.0 + 120 / 3600 * 0.10)


def test_the_task_files_volume_prices_the_report_when_no_option_does(make_task, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    path = make_task(costs={"price_per_hour": 0.5, "volume": "1825000/year", "latency_p50_ms": 60000})
    res = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    # printed to two significant figures
    assert "Cost at 1,800,000 queries a year" in res.output and "At 1,800,000 queries a year" in res.output
    res = CliRunner().invoke(app, ["report", str(path), "--volume", "10"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Cost at 10 queries" in res.output  # an option still wins
    bad = make_task(costs={"volume": "lots"})
    res = CliRunner().invoke(app, ["validate", str(bad)])
    assert res.exit_code != 0 and "not a query volume" in (res.output + str(res.exception))


def _tied_pair(gap):
    """A LoRA head (0.827) and a full fine-tune (0.863) the paired test cannot separate (p = 0.052), the head's
    measured training ``gap`` cheaper: the shape of a 300-row SST-2 study priced at 1M queries."""
    full = tuned_row(model="minilm+full", score=0.863, ci_low=0.82, ci_high=0.90, run_id="full",
                     tune={"train_time_s": 3.80 * 3600, "device": "cpu"}, time_per_1k_s=0.0)
    head = tuned_row(model="minilm+lora-head", score=0.827, ci_low=0.78, ci_high=0.87, p_vs_best=0.052,
                     run_id="head", tune={"train_time_s": 3.80 * 3600 * (1 - gap), "device": "cpu"},
                     time_per_1k_s=0.0)
    return [full, head]


def test_a_cost_gap_inside_the_timing_uncertainty_does_not_beat_a_higher_score():
    rec = recommend(_tied_pair(0.08), volume=Volume(1_000_000))  # 3.52 vs 3.80 machine-hours: 8%
    assert rec.row.run_id == "full"
    assert "by less than the uncertainty of their model time (±25%)" in rec.text
    assert "classifier x minilm+lora-head would cost a little less" in rec.text
    # with the margin set to nothing, the cheaper row wins again, as a single noisy timing would make it
    assert recommend(_tied_pair(0.08), volume=Volume(1_000_000), tolerance=0.0).row.run_id == "head"


def test_a_cost_gap_beyond_the_timing_uncertainty_still_wins():
    rec = recommend(_tied_pair(0.6), volume=Volume(1_000_000))
    assert rec.row.run_id == "head"
    assert "would cost a little less" not in rec.text


def test_token_bills_are_exact_so_a_small_gap_in_them_counts():
    # two remote rows billed by tokens only: a 5% cheaper bill is a real saving, not timing noise
    a = prompt_row(run_id="a", score=0.81, cost_per_1k=1.00, price_per_hour=None, on_premise=False, p_vs_best=None,
                   time_per_1k_s=0.0)
    b = prompt_row(run_id="b", strategy="few_shot", score=0.80, cost_per_1k=0.95, price_per_hour=None,
                   on_premise=False, time_per_1k_s=0.0)
    assert recommend([a, b], volume=Volume(10_000)).row.run_id == "b"


def test_the_recommendation_states_the_volumes_over_which_the_pick_holds():
    rec = recommend(study(), volume=Volume(1_000_000))
    lo, hi = rec.volume_range
    # below the break-even (~1,570 queries) the prompt row is cheaper, but only beyond the ±25% margin below
    # ~895 queries; in between the costs are a tie and the better-scoring tuned row is kept
    assert 880 < lo < 910 and hi == float("inf")
    assert f"This pick holds from about {lo:,.0f}"[:26] in rec.text and "queries up" in rec.text
    low = recommend(study(), volume=Volume(100))
    assert low.volume_range[0] == 0 and 880 < low.volume_range[1] < 910
    assert "This pick holds up to about" in low.text


def test_a_distilled_student_tied_with_its_gold_twin_is_flagged():
    gold = tuned_row(model="minilm+full", score=0.83, run_id="gold", tune={"id": "g1", "train_time_s": 100.0})
    student = tuned_row(model="minilm+full (distilled)", score=0.785, ci_low=0.72, ci_high=0.84, p_vs_best=0.09,
                        run_id="stud", tune={"id": "s1", "train_time_s": 90.0, "distill": {"gold_tune": "g1"}})
    rec = recommend([gold, student], volume=Volume(100_000))
    assert "is tied with its twin trained on the gold labels, classifier x minilm+full" in rec.text
    significantly = tuned_row(model="minilm+full (distilled)", score=0.6, ci_low=0.53, ci_high=0.67,
                              p_vs_best=0.001, run_id="stud",
                              tune={"id": "s1", "train_time_s": 90.0, "distill": {"gold_tune": "g1"}})
    assert "twin" not in recommend([gold, significantly], volume=Volume(100_000)).text


def test_work_priced_costs_carry_the_calibration_margin_not_the_blanket_tolerance():
    """A 15% gap is noise for measured time (±25%) but not for work x calibrated unit costs (±5%)."""
    from dataclasses import replace

    worked = [replace(r, cost_basis="work", cost_uncertainty=0.05, work_time_per_1k_s=0.0,
                      tune={**r.tune, "train_work_s": r.tune["train_time_s"], "train_time_s": 3 * r.tune["train_time_s"]})
              for r in _tied_pair(0.15)]
    assert recommend(_tied_pair(0.15), volume=Volume(1_000_000)).row.run_id == "full"  # measured time: a tie
    rec = recommend(worked, volume=Volume(1_000_000))
    assert rec.row.run_id == "head"  # cheaper beyond ±5%, priced from work (train_work_s), not the tripled time
    assert "This pick holds" in rec.text and "±5%" in rec.text
