"""The terminal leaderboard: the default study's rows, tuned ones included, fit a 120-column terminal."""

from rich.console import Console

from taskfit.leaderboard import render, verdict
from taskfit.types import LeaderboardRow

TUNE = {"id": "9f3c2a1b", "method": "lora", "objective": "classify", "base_model": "minilm", "train_time_s": 412.7,
        "peak_mem_mb": 1893.0, "trainable_params": 1_234_567, "trainable_pct": 5.43, "adapter_mb": 3.5,
        "device": "cpu", "forgetting": {"score_change": -0.012, "ppl_change_pct": 4.2}}


def study_rows() -> list[LeaderboardRow]:
    """The rows of `taskfit run examples/sst2/task.yaml`: four strategies on the bundled model, three tuned."""
    names = [("few_shot_knn", "smollm2-135m"), ("minilm+lora-head", "minilm+lora-head"),
             ("structured", "smollm2-135m"), ("classifier", "minilm+full"), ("zero_shot", "smollm2-135m"),
             ("few_shot_balanced", "smollm2-135m"), ("zero_shot", "smollm2+lora-sft")]
    out = []
    for i, (strategy, model) in enumerate(names):
        tuned = "+" in model
        out.append(LeaderboardRow(
            strategy=strategy, model=model, n=200, metric="accuracy", score=0.9 - i * 0.03, ci_low=0.851 - i * 0.03,
            ci_high=0.934 - i * 0.03, p_vs_best=None if i == 0 else 0.0123 * i, latency_p50_ms=1234.0,
            tokens_in=512.3, tokens_out=12.0, calls=400, calls_per_query=2.0, cache_hits=400, cost_per_1k=0.0,
            time_per_1k_s=1234.5, parse_fail_rate=0.005, run_id=f"{i:08x}", metrics={"accuracy": 0.9, "recall@4": 0.5},
            judge_calls=200, judge_tokens_in=300.0, judge_tokens_out=1.0, judge_cost_per_1k=0.0123,
            tune=dict(TUNE, id=f"t{i}") if tuned else None))
    return out


def printed(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_default_leaderboard_fits_120_columns_one_line_per_row():
    table = study_rows()
    lines = printed(render(table, title="Study: sst2 (accuracy)"), 120)
    assert max(len(line) for line in lines) <= 120
    for r in table:  # each row on one line: its strategy, model, CI and run id together, no wrapped cells
        (line,) = [line for line in lines if f"{r.ci_low:.3f}, {r.ci_high:.3f}" in line]
        assert r.strategy in line and r.model in line and r.run_id in line
    # what does not fit goes to a second table: training cost, judge spend, other metrics
    assert any("forgetting -0.012" in line for line in lines) and any("recall@4=0.500" in line for line in lines)
    verdict_lines = printed(verdict(table), 120)
    assert max(len(line) for line in verdict_lines) <= 120


def test_wide_shows_every_column_in_one_table():
    table = study_rows()
    lines = printed(render(table, title="Study: sst2 (accuracy)", wide=True), 400)
    (line,) = [line for line in lines if table[1].run_id in line and "0.821" in line]
    for cell in ("1234", "forgetting -0.012", "recall@4=0.500", "200 calls"):  # p50 ms, training, metrics, judge
        assert cell in line
