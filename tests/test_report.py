"""The decision report: the recommendation's branches on fabricated leaderboards, the Pareto front, the
self-contained HTML from a scripted study, and the `taskfit report` command."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from html import escape
from pathlib import Path

import pytest

from taskfit.errors import TaskfitError
from taskfit.report import (
    ReportData,
    collect,
    pareto_front,
    recommend,
    render_html,
    resolve_targets,
    scatter_svg,
    write_report,
)
from taskfit.runner import evaluate
from taskfit.study import prepare, select_arms
from taskfit.types import ReportRow

ROOT = Path(__file__).resolve().parents[1]


def row(strategy, score, lo, hi, p=None, model="smollm2-135m", **extra):
    base = {
        "strategy": strategy,
        "model": model,
        "n": 200,
        "metric": "accuracy",
        "score": score,
        "ci_low": lo,
        "ci_high": hi,
        "p_vs_best": p,
        "latency_p50_ms": 50.0,
        "tokens_in": 70.0,
        "tokens_out": 0.0,
        "cost_per_1k": 0.0,
        "time_per_1k_s": 50.0,
        "run_id": f"{strategy}-{model}",
    }
    return ReportRow(**{**base, **extra})


TUNE = {
    "id": "t1",
    "method": "lora",
    "objective": "classify",
    "base_model": "smollm2-135m",
    "train_time_s": 360.0,
    "peak_mem_mb": 1900.0,
    "adapter_mb": 3.5,
    "device": "cpu",
    "curve": [
        {"step": 1, "epoch": 0.1, "loss": 0.9},
        {"step": 10, "epoch": 1, "loss": 0.4, "eval_score": 0.8},
    ],
    "plan": {"peak_mem_mb": 2000.0, "time_per_epoch_s": 300.0},
    "measured": {"peak_mem_mb": 1900.0, "time_per_epoch_s": None},
    "forgetting": {
        "ppl_before": 12.0,
        "ppl_after": 12.9,
        "score_before": None,
        "score_after": None,
        "general_task": "wikitext",
    },
}


def tuned(score, lo, hi, p=None, **extra):
    return row("zero_shot", score, lo, hi, p, model="tuned:t1", tune=TUNE, **extra)


# -- the recommendation, one test per branch -------------------------------------------------------------


def test_prompting_is_enough_when_the_prompt_row_is_inside_the_tuned_models_ci():
    table = [
        tuned(0.82, 0.76, 0.87),
        row("few_shot_knn", 0.80, 0.74, 0.85, p=0.41),
        row("zero_shot", 0.60, 0.53, 0.67, p=0.0001),
    ]
    rec = recommend(table)
    assert rec.choice == "prompting" and rec.row.strategy == "few_shot_knn"
    assert rec.text.startswith("Prompt engineering is enough: few_shot_knn x smollm2-135m")
    assert (
        "within the CI of the best row, zero_shot x tuned:t1" in rec.text
        and "without training a model" in rec.text
    )
    # same model time per query: the 6 minutes of training are never paid back
    assert "The best fine-tuned row, zero_shot x tuned:t1, never costs less than the best prompt row" in rec.text
    assert "Significantly worse: zero_shot x smollm2-135m" in rec.text


def test_fine_tune_when_the_gain_is_significant_and_says_what_it_costs():
    table = [tuned(0.90, 0.85, 0.93), row("few_shot_knn", 0.78, 0.72, 0.83, p=0.001)]
    rec = recommend(table)
    assert rec.choice == "fine_tune" and rec.row.model == "tuned:t1"
    assert rec.text.startswith("Fine-tune: zero_shot x tuned:t1 scores 0.900 [0.850, 0.930].")
    assert "+12.0 points (p = 0.001)" in rec.text
    assert "6 minutes of CPU training" in rec.text and "1,900 MB peak training memory" in rec.text


def test_retrieval_when_rag_beats_closed_book():
    table = [row("rag", 0.31, 0.24, 0.38), row("closed_book", 0.05, 0.02, 0.09, p=0.0001)]
    rec = recommend(table)
    assert rec.choice == "retrieval" and rec.text.startswith("Use retrieval: rag x smollm2-135m")
    assert "+26.0 points" in rec.text


def test_tie_when_nothing_is_separable_picks_the_least_demanding_row():
    table = [
        tuned(0.74, 0.60, 0.85),
        row("rag", 0.72, 0.58, 0.83, p=0.7),
        row("few_shot_knn", 0.70, 0.56, 0.81, p=0.5, tokens_in=400.0),
        row("zero_shot", 0.70, 0.56, 0.81, p=0.5),
    ]
    rec = recommend(table)
    assert rec.choice == "tie"
    assert rec.text.startswith("No clear winner") and "zero_shot x smollm2-135m" in rec.text
    assert rec.row.strategy == "zero_shot"  # prompting, and fewer tokens than few_shot_knn


def test_a_larger_score_inside_the_ci_does_not_count():
    # 10 points better but p = 0.2: prompting stays the recommendation
    table = [
        tuned(0.80, 0.70, 0.88),
        row("zero_shot", 0.70, 0.60, 0.79, p=0.2),
        row("cot", 0.40, 0.3, 0.5, p=0.0),
    ]
    assert recommend(table).choice == "prompting"
    # the same rows with p = 0.01: fine-tune
    table[1] = replace(table[1], p_vs_best=0.01)
    assert recommend(table).choice == "fine_tune"


def test_pairwise_tests_override_ci_overlap_and_a_paid_api_weighs_against_a_row():
    best = row("zero_shot", 0.9, 0.85, 0.94, model="gpt", cost_per_1k=0.5)
    local = tuned(0.88, 0.83, 0.92, p=0.6)
    worse = row("cot", 0.4, 0.33, 0.47, p=0.0)
    rec = recommend([best, local, worse])
    # tied, and the remote row costs money per query: the on-premise tuned model is recommended
    assert rec.choice == "fine_tune" and "runs on-premise, no per-query fee" in rec.text
    assert "within the CI of the best row, zero_shot x gpt" in rec.text
    # a paired test between the two (stored by collect) that separates them wins over p_vs_best
    pairs = {("zero_shot-gpt", "zero_shot-tuned:t1"): {"p": 0.001, "diff": 0.02, "ci": (0.01, 0.03)}}
    assert recommend([best, local, worse], pairs).choice == "prompting"
    # without any p-value, non-overlapping CIs separate rows
    local = replace(local, p_vs_best=None, score=0.7, ci_low=0.6, ci_high=0.8)
    assert recommend([best, local, worse]).choice == "prompting"


def test_no_rows():
    assert recommend([]).choice == "none"


def test_pareto_front():
    # (cost, score): lower cost and higher score win
    pts = [(1.0, 0.8), (2.0, 0.9), (2.0, 0.7), (0.5, 0.5), (3.0, 0.9)]
    assert pareto_front(pts) == [0, 1, 3]


# -- the HTML from a real (scripted) study ---------------------------------------------------------------


def _study(path, workspace):
    task, ds = prepare(path)
    runs = evaluate(task, ds, select_arms(task, None, None), split="test", limit=None, workspace=workspace)
    return workspace.runs, runs


def _self_contained(html: str) -> None:
    assert "<svg" in html and "</html>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_report_of_the_latest_study(make_task, taskfit_home, workspace):
    path = make_task()
    store, first = _study(path, workspace=workspace)
    # a second study on the same task (new settings, so new runs): the report shows only this one
    store, second = _study(make_task(description="a second study"), workspace=workspace)
    out = write_report(["tiny"], workspace=workspace)
    assert out == taskfit_home / "reports" / f"tiny-{second[0].study}.html"
    html = out.read_text()
    _self_contained(html)
    for r in second:
        assert r.id in html
    for r in first:
        assert r.id not in html
    rec = collect(workspace, second).recommendation
    assert 'id="recommendation"' in html and escape(rec.text) in html and rec.choice in ("prompting", "tie")
    assert 'id="plot-ci"' in html and 'id="plot-cost"' in html and 'id="plot-latency"' in html
    assert "stroke-dasharray" in html  # the Pareto front
    assert "gold \\ predicted" in html  # confusion matrices for a label task


def test_collect_confusion_matrix_and_generative_breakdown(make_task, workspace):
    store, runs = _study(make_task(strategies=["zero_shot"]), workspace=workspace)
    data = collect(workspace, runs)
    (b,) = data.breakdowns
    # the script scores 'great' positive, 'terrible' negative; the rest tie and go to the first label
    assert b.labels == ["negative", "positive"] and b.matrix == [[4, 0, 0], [1, 3, 0]]
    gen_store, gen_runs = _study(
        make_task(labels=None, output_mode="generate", strategies=["zero_shot"], metrics=["token_f1"])
    , workspace=workspace)
    (g,) = collect(workspace, gen_runs).breakdowns
    assert not g.labels and sum(g.outcomes.values()) == 8 and g.outcomes["wrong"] >= 1


def test_tuned_rows_render_curves_resources_and_forgetting():
    table = [tuned(0.9, 0.85, 0.93), row("zero_shot", 0.7, 0.63, 0.76, p=0.001)]
    partial = dict(TUNE, curve=None, plan=None, forgetting=None)  # missing pieces are left out, not errors
    table.append(row("few_shot", 0.5, 0.4, 0.6, p=0.0, model="tuned:t2", tune=partial))
    data = ReportData(
        title="t", metric="accuracy", rows=table, pairwise={}, breakdowns=[], recommendation=recommend(table)
    )
    html = render_html(data)
    _self_contained(html)
    assert "Fine-tuned models" in html and "Training loss by step" in html and "Eval score by step" in html
    assert "perplexity after" in html and "wikitext" in html and "planned" in html
    assert "<title>train loss</title>" in html and "<title>eval score</title>" in html


def test_unknown_target_is_a_clear_error(make_task, workspace):
    _study(make_task(), workspace=workspace)
    with pytest.raises(TaskfitError, match="neither a task file, a task name nor a run id"):
        resolve_targets(workspace.runs, ["nope"])


def test_report_command(make_task, taskfit_home, tmp_path, workspace):
    store, runs = _study(make_task(), workspace=workspace)
    out = tmp_path / "r.html"
    env = {**os.environ, "TASKFIT_HOME": str(taskfit_home)}
    res = subprocess.run(
        [sys.executable, "-m", "taskfit.cli", "report", runs[0].id, runs[1].id, "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and out.stat().st_size > 2000
    bad = subprocess.run(
        [sys.executable, "-m", "taskfit.cli", "report", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "neither a task file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_report_on_the_bundled_model_renders_in_chromium(tmp_path, workspace):
    """The default study (8 rows) on the real model, then the report, screenshotted by headless Chromium."""
    from taskfit.study import run_study

    _, table = run_study(ROOT / "examples" / "sst2" / "task.yaml", workspace=workspace, limit=8)
    out = write_report([r.run_id for r in table], tmp_path / "report.html", workspace=workspace)
    html = out.read_text()
    _self_contained(html)
    assert all(r.run_id in html for r in table) and "Recommendation" in html
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("headless Chromium is not installed")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def test_log_scale_cost_axis_ticks_show_small_prices():
    # costs from $0.00015 to $0.05 per 1k queries: a log axis from 0.0001, whose tick must not read "0.000"
    table = [
        row("zero_shot", 0.7, 0.6, 0.8, cost_per_1k=0.00015),
        row("cot", 0.8, 0.7, 0.9, cost_per_1k=0.05, model="gpt"),
    ]
    svg = scatter_svg(table, "cost_per_1k", "$ per 1,000 queries", "accuracy")
    ticks = re.findall(r'class="tick">([^<]*)<', svg)
    assert "(log scale)" in svg and {"0.0001", "0.001", "0.01"} <= set(ticks)
    assert "0.000" not in ticks


def test_a_named_baseline_adds_a_compared_with_section(make_task, taskfit_home, workspace):
    from typer.testing import CliRunner

    from taskfit.cli import app

    _, before = _study(make_task(), workspace=workspace)
    workspace.baselines.set("last-week", [r.id for r in before])
    # the instruction now says "great", which the scripted model reads as positive: the negative reviews flip
    path = make_task(prompt={"instruction": "Is it great or not?", "input_template": "Review: {{ text }}"})
    _, after = _study(path, workspace=workspace)
    out = taskfit_home / "compared.html"
    res = CliRunner().invoke(app, ["report", *[r.id for r in after], "--baseline", "last-week", "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    _self_contained(html)
    assert '<h2 id="compared">Compared with last-week</h2>' in html
    assert html.count("<tr><td class=\"l\">zero_shot x fake</td>") == 1 and f"(run {before[0].id})" in html
    assert "zero_shot x fake: right &rarr; wrong (4)" in html  # the flipped examples, behind a details element
    assert "boring and far too long" in html
    plain = write_report([r.id for r in after], taskfit_home / "plain.html", workspace=workspace)
    assert 'id="compared"' not in plain.read_text()
