"""Core result types that cross module boundaries: a stored prediction and a leaderboard row.

This module imports nothing from taskfit, so every layer can use it. ``--json`` prints
``LeaderboardRow.to_json()``; its keys are a documented contract (docs/json.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# the first keys of every ``--json`` row, in this order; docs/json.md lists every key
JSON_KEYS = ("strategy", "model", "n", "score", "ci_low", "ci_high", "p_vs_best", "latency_p50_ms", "tokens_in",
             "tokens_out", "calls", "cache_hits", "cost_per_1k")


@dataclass(frozen=True)
class PredictionRow:
    """One example's prediction in one run, as stored: what went in, what came out, its scores and cost."""

    run_id: str = ""
    idx: int = 0
    example_id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    output: str = ""
    answer: str | None = None
    parse_failed: int = 0
    failed: int = 0
    error: str | None = None
    score: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # every metric's score, the first one's included
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    calls: int = 0
    cache_hits: int = 0
    trace: dict[str, Any] | None = None  # {"calls": [...], "details": {...}}; None when read without it
    # what scoring this row spent on model calls (an LLM judge) and the metrics' reasons:
    # {"calls": int, "tokens_in": float, "tokens_out": float, "cost": float, "reasons": {metric: text}}
    scoring: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Footprint:
    """What serving a run's model costs, measured in a fresh process that loads it and answers single queries
    (the run's own prompts) on one thread; kept with the run."""

    precision: str  # float32, int8 or int4 weights
    size_mb: float  # weights on disk (safetensors, bin, gguf)
    peak_mb: float  # the process's peak resident memory: interpreter, libraries, weights, one forward pass
    ms_per_query: float  # mean of single forward passes, after one warm-up
    load_s: float  # loading the tokenizer and weights
    queries: int  # forward passes timed


@dataclass(frozen=True)
class LeaderboardRow:
    """One strategy x model arm on the leaderboard: score with its 95% CI, paired test against the best row,
    and what a query costs. Averages are per query unless named otherwise."""

    strategy: str
    model: str
    score: float
    ci_low: float
    ci_high: float
    n: int = 0
    metric: str = ""
    p_vs_best: float | None = None  # None for the best row itself
    latency_p50_ms: float = 0.0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    calls: int = 0
    calls_per_query: float = 0.0
    cache_hits: int = 0
    cost_per_1k: float = 0.0
    time_per_1k_s: float = 0.0
    parse_fail_rate: float = 0.0
    failed: int = 0
    mode: str | None = None
    run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    judge_calls: int = 0  # model calls the metrics made to score the run (an LLM judge), in total
    judge_tokens_in: float = 0.0  # per query
    judge_tokens_out: float = 0.0  # per query
    judge_cost_per_1k: float = 0.0  # $ per 1,000 queries scored
    score_via: str = "local"  # generate (parsed replies), local (in-process log-likelihood) or a server's path
    score_via_reason: str | None = None  # why a server could not score labels
    server: str | None = None  # the server that ran the model
    # serving footprint, measured by `taskfit shrink` in a fresh process (None where not measured):
    precision: str | None = None  # float32, int8 or int4 weights
    size_mb: float | None = None  # weights on disk
    serving_peak_mb: float | None = None  # peak memory of a process that loads the model and answers queries
    ms_per_query: float | None = None  # one query at a time, one thread
    # model time per 1,000 queries from the row's work (tokens encoded and generated) x the model's calibrated
    # unit costs (taskfit.calibration); None where no calibration applies (time_per_1k_s prices the row then)
    work_time_per_1k_s: float | None = None
    cost_basis: str = "time"  # work: work x calibrated unit costs; time: measured time; tokens: a token bill only
    cost_uncertainty: float | None = None  # relative uncertainty of a work-priced cost; None: costs.tolerance
    tune: dict[str, Any] | None = None  # what a fine-tuned model cost to train; None for prompt-only rows

    @property
    def name(self) -> str:
        return f"{self.strategy} x {self.model}"

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: JSON_KEYS first, then the rest; ``tune`` only on fine-tuned rows."""
        d = {f.name: getattr(self, f.name) for f in fields(LeaderboardRow)}
        if d["tune"] is None:
            del d["tune"]
        return {**{k: d[k] for k in JSON_KEYS}, **d}


@dataclass(frozen=True)
class ReportRow(LeaderboardRow):
    """A leaderboard row with what a decision also needs: the technique, where the model runs, its size."""

    technique: str | None = None  # prompting | retrieval | fine_tune; None: inferred from tune and strategy
    on_premise: bool | None = None  # None: inferred from the per-query fee
    strategy_name: str | None = None
    split: str | None = None
    study: str | None = None
    task_name: str | None = None
    model_params: int | None = None
    model_mb: float | None = None
    price_per_hour: float | None = None  # $ per hour of the machine that serves the model; None: not priced
    train_price_per_hour: float | None = None  # $ per hour of the machine that trained it (fine-tuned rows)
    labelling: dict[str, Any] | None = None  # a distilled row's teacher bill: {"cost": $, "time_s": model time}
