"""What a study will cost before it runs: model calls, tokens, dollars and time per strategy x model row,
without loading a model.

Each row's strategy runs as it would for real, on a stand-in model: a call found in the call cache is
answered from it (free: it will not be made again); any other call is counted and answered with a filler
reply of the length the model is expected to write. So the calls, their order and their exact rendered
prompts come from the strategy itself: running is how a strategy declares its call pattern. The filler is
shaped to take every optional step (it lists numbered questions and a follow-up, and never says it is
done), so loops are counted at their limits; a strategy may steer its own dry run by defining
``dry_reply(request) -> str | None`` (None: the filler), as self_ask does to expect its demo's follow-ups.

Expected reply length per call: the model's measured share of ``max_tokens`` used (from the cache, per
``max_tokens`` value, else over all its calls), else the whole ``max_tokens``. Expected time: a linear fit
of measured latency on tokens in and out over the model's cached calls, else the stated defaults below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from taskfit.backends.facts import ModelFacts, model_facts
from taskfit.cache import CallCache, call_key
from taskfit.dataset import Dataset, Example
from taskfit.lm import LM, Trace
from taskfit.prompts import prompt_parts
from taskfit.shard import Shard
from taskfit.strategies import StrategyContext, strategies
from taskfit.taskfile import ModelSpec, StrategySpec, Task
from taskfit.types import PredictionRow

# used when the cache holds no measured call of the model
DEFAULT_MS = {"local": {"per_call": 50.0, "per_token_in": 0.5, "per_token_out": 40.0},
              "remote": {"per_call": 400.0, "per_token_in": 0.0, "per_token_out": 15.0}}
FILLER_PLAN = "1. Which?\n2. Which?\nFollow up: Which?\n"  # three questions, one a follow-up


@dataclass
class RowCost:
    """One row of a dry run, cached calls included: its requests not made for an earlier row (a calibration
    prompt shared by every row counts once), how many of those the cache holds, and the tokens of all its calls
    (a call shared by several rows of a batch split among them), as a real run charges them."""

    calls: int
    cached: int
    tokens_in: float
    tokens_out: float


@dataclass
class Estimate:
    """One row's expected cost; ``calls``/tokens/dollars/seconds count only the calls not in the cache."""

    strategy: str
    model: str
    n: int  # rows
    calls: float = 0  # model completions (a request for n samples counts n)
    cached_calls: float = 0
    tokens_in: float = 0
    tokens_out: float = 0
    dollars: float = 0.0
    seconds: float = 0.0
    time_basis: str = ""  # where the time per call comes from
    scoring: str = ""  # how labels are scored when that is an assumption (a server not probed yet)
    if_generated: dict[str, float] | None = None  # the figures if that server cannot score labels after all
    steps: dict[str, float] = field(default_factory=dict)  # calls per step name
    per_row: list[RowCost] = field(default_factory=list, repr=False)  # in order; not part of to_dict

    @property
    def calls_per_query(self) -> float:
        return (self.calls + self.cached_calls) / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "calls_per_query": round(self.calls_per_query, 2)}
        del out["per_row"]
        return out


@dataclass
class Measured:
    """What the cache knows of a model: reply length as a share of max_tokens, and a latency fit."""

    fill: dict[int, float] = field(default_factory=dict)  # max_tokens -> tokens_out / (max_tokens * n)
    fill_all: float | None = None
    ms: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # kind -> (per call, per in, per out)
    n_calls: int = 0

    def expected_out(self, r: GenerateRequest) -> int:
        share = self.fill.get(r.max_tokens, self.fill_all if self.fill_all is not None else 1.0)
        return max(1, round(r.max_tokens * min(share, 1.0)))


def measure(cache: CallCache, model_id: str | None, limit: int = 5000) -> Measured:
    m = Measured()
    if not model_id:
        return m
    with cache.eng.connect() as conn:
        rows = conn.execute(text("SELECT kind, request, response FROM calls WHERE model_id = :m "
                                 "ORDER BY created DESC LIMIT :n"), {"m": model_id, "n": limit}).all()
    by_cap: dict[int, list[float]] = {}
    fits: dict[str, list[tuple[float, float, float]]] = {}
    for kind, req, resp in rows:
        req, resp = json.loads(req), json.loads(resp)
        tin, tout, ms = resp.get("tokens_in", 0), resp.get("tokens_out", 0), resp.get("latency_ms", 0.0)
        fits.setdefault(kind, []).append((tin, tout, ms))
        if kind == "generate" and req.get("max_tokens"):
            cap = int(req["max_tokens"]) * int(req.get("n", 1) or 1)
            by_cap.setdefault(int(req["max_tokens"]), []).extend([tout, cap])
    m.n_calls = len(rows)
    for cap, pairs in by_cap.items():
        m.fill[cap] = sum(pairs[0::2]) / max(1, sum(pairs[1::2]))
    if by_cap:
        pairs = [x for p in by_cap.values() for x in p]
        m.fill_all = sum(pairs[0::2]) / max(1, sum(pairs[1::2]))
    for kind, obs in fits.items():
        m.ms[kind] = _latency_fit(np.array(obs, dtype=float))
    return m


def _latency_fit(obs: np.ndarray) -> tuple[float, float, float]:
    """ms = a + b * tokens_in + c * tokens_out by least squares; with too few calls, or a negative term,
    the mean time per call."""
    mean = (float(obs[:, 2].mean()), 0.0, 0.0)
    if len(obs) < 6:
        return mean
    x = np.column_stack([np.ones(len(obs)), obs[:, 0], obs[:, 1]])
    coef, *_ = np.linalg.lstsq(x, obs[:, 2], rcond=None)
    return tuple(float(c) for c in coef) if (coef >= 0).all() else mean


# -- the stand-in model --------------------------------------------------------------------------------------


class _ReadOnlyCache:
    """The call cache for lookups; a dry run writes nothing."""

    def __init__(self, cache: CallCache):
        self.cache = cache

    def get_many(self, keys):
        return self.cache.get_many(keys)

    def put_many(self, rows) -> None:
        pass


def filler(n_tokens: int, tag: str = "") -> str:
    """A reply of about ``n_tokens`` tokens (words); any but the shortest open with the plan that takes every
    optional step. ``tag`` keeps the replies to different prompts different, as real ones are (identical
    follow-up prompts would be counted as one call)."""
    plan = FILLER_PLAN.replace("?", f" {tag}?" if tag else "?")
    if n_tokens < 6:
        return " ".join([tag or "so", *["so"] * (n_tokens - 1)])
    return plan + " ".join(["so"] * (n_tokens - len(plan.split())))


class DryBackend:
    """Answers what the cache does not hold: filler of the expected length, zero log-probabilities."""

    supports_tools = False
    batch_size = 10_000

    def __init__(self, facts: ModelFacts, measured: Measured, steer: Callable[[GenerateRequest], str] | None = None):
        self.model_id = facts.model_id or "dry:unknown-model"
        self.score_id = facts.score_id or self.model_id  # so score calls the cache holds are found
        self.local = not facts.remote
        self.supports_score = facts.can_score is not False  # unknown: as estimated (see estimate_examples)
        self.facts, self.measured, self.steer = facts, measured, steer
        default = DEFAULT_MS["remote" if facts.remote else "local"]
        self.default_ms = (default["per_call"], default["per_token_in"], default["per_token_out"])

    def _ms(self, kind: str, tin: float, tout: float) -> float:
        a, b, c = self.measured.ms.get(kind) or self.measured.ms.get("generate") or self.default_ms
        return a + b * tin + c * tout

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        out = []
        for r in requests:
            n_out = self.measured.expected_out(r)
            reply = self.steer(r) if self.steer else None
            if reply is None:
                reply = filler(n_out, call_key(self.model_id, "generate", r)[:6])
            tin = self.facts.count(r.messages)
            out.append(GenerateResult(texts=[reply] * r.n, tokens_in=tin, tokens_out=n_out * r.n,
                                      latency_ms=self._ms("generate", tin, n_out) * r.n))
        return out

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        out = []
        for r in requests:
            tin = self.facts.count(r.messages)
            out.append(ScoreResult(logprobs=[0.0] * len(r.continuations), token_counts=[1] * len(r.continuations),
                                   tokens_in=tin, latency_ms=self._ms("score", tin, 0)))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": "dry", "model_id": self.model_id}


def estimate_examples(task: Task, examples: list[Example], strategy: StrategySpec, model: ModelSpec,
                      cache: CallCache, *, train: list[Example] | None = None, mode: str | None = None,
                      batch: int = 32) -> Estimate:
    """The expected cost of running ``strategy`` with ``model`` on ``examples`` (any rows: a test split, the
    train rows a teacher labels...). Nothing is loaded but a tokenizer; nothing is written to the cache.

    ``mode`` None: as the runner resolves it, from what the backend says of label scoring. A server whose
    scoring path is not known until its first call (not probed yet) is estimated as scoring labels, and
    ``if_generated`` holds the figures for a server that turns out unable to."""
    facts = model_facts(model, cache)
    measured = measure(cache, facts.model_id)
    c = task.config
    resolved = mode
    if resolved is None:  # as the runner resolves it
        resolved = c.output_mode if c.output_mode != "auto" else (
            "score" if c.labels and facts.can_score is not False else "generate")
    est = _dry_run(task, examples, strategy, model, cache, facts, measured, train or [], resolved, batch)
    if mode is None and resolved == "score" and facts.can_score is None:
        alt = _dry_run(task, examples, strategy, model, cache, facts, measured, train or [], "generate", batch)
        est.scoring = "unknown until the first call (estimated as label scoring)"
        est.if_generated = {k: getattr(alt, k) for k in ("calls", "tokens_in", "tokens_out", "dollars", "seconds")}
    return est


def _dry_run(task: Task, examples: list[Example], strategy: StrategySpec, model: ModelSpec, cache: CallCache,
             facts: ModelFacts, measured: Measured, train: list[Example], mode: str, batch: int) -> Estimate:
    """The strategy run in ``mode`` on the stand-in model, its calls counted."""
    c = task.config
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=train, mode=mode, seed=c.data.seed)
    strat = strategies.get(strategy.name)(strategy, ctx)
    backend = DryBackend(facts, measured, getattr(strat, "dry_reply", None))
    lm = LM(backend, _ReadOnlyCache(cache))  # type: ignore[arg-type]
    est = Estimate(strategy=strategy.label(), model=model.label(), n=len(examples))
    seen: set[str] = set()
    for start in range(0, len(examples), batch):  # the runner's chunks, so per-run setup is counted once
        for p in strat.predict(examples[start:start + batch], lm):
            _add(est, p.trace)
            new = first_requests(p.trace.calls, seen)
            est.per_row.append(RowCost(sum(int(c["params"].get("n", 1)) for c in new),
                                       sum(int(c["params"].get("n", 1)) for c in new if c["cached"]),
                                       sum(c["tokens_in"] for c in p.trace.calls),
                                       sum(c["tokens_out"] for c in p.trace.calls)))
    est.dollars = (est.tokens_in * model.price_in_per_1m + est.tokens_out * model.price_out_per_1m) / 1e6
    est.time_basis = (f"measured ({measured.n_calls} cached calls)" if measured.ms
                      else "default: {:.0f} ms/call + {:.1f} ms/token in + {:.0f} ms/token out".format(*backend.default_ms))
    return est


def first_requests(calls: list[dict[str, Any]], seen: set[str]) -> list[dict[str, Any]]:
    """The trace calls whose request is not in ``seen`` (the requests met so far), which it then holds."""
    out = []
    for c in calls:
        key = json.dumps([c.get("kind"), c.get("messages"), c.get("params")], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _add(est: Estimate, trace: Trace) -> None:
    for call in trace.calls:
        n = int(call["params"].get("n", 1))
        step = call["step"]
        if call["cached"]:
            est.cached_calls += n
            continue
        est.calls += n
        est.steps[step] = est.steps.get(step, 0) + n
        est.tokens_in += call["tokens_in"]
        est.tokens_out += call["tokens_out"]
        est.seconds += call["latency_ms"] / 1000


def estimate_arms(task: Task, dataset: Dataset, arms: list, *, split: str, limit: int | None,
                  cache: CallCache, shard: Shard | None = None) -> list[Estimate]:
    """One estimate per strategy x model arm on the first ``limit`` rows of ``split`` (of those, ``shard``'s),
    as ``evaluate`` runs."""
    examples = dataset.split(split)[:limit] if limit else dataset.split(split)
    examples = [ex for ex in examples if shard is None or shard.owns(ex.id)]
    train = dataset.splits.get("train", [])
    return [estimate_examples(task, examples, a.strategy, a.model, cache, train=train) for a in arms]


def actual_from_predictions(rows: list[PredictionRow]) -> dict[str, float]:
    """The same figures as an estimate, measured from a finished run's stored traces (fresh calls only)."""
    est = Estimate(strategy="", model="", n=len(rows))
    for row in rows:
        calls = (row.trace or {}).get("calls", [])
        _add(est, Trace(calls=calls))
    return {k: getattr(est, k) for k in ("calls", "cached_calls", "tokens_in", "tokens_out", "seconds")}


def estimate_study(task_path: str, cache: CallCache, *, strategy_names: list[str] | None = None,
                   model_names: list[str] | None = None, split: str | None = None,
                   limit: int | None = None, shard: Shard | None = None) -> tuple[Task, list[Estimate]]:
    """The estimate of ``taskfit eval`` with the same arguments (``limit`` None: the task's; 0: every row)."""
    from taskfit.study import prepare, select_arms

    task, dataset = prepare(task_path)
    arms = select_arms(task, strategy_names, model_names)
    limit = task.config.limit if limit is None else (limit or None)
    return task, estimate_arms(task, dataset, arms, split=split or task.config.split, limit=limit, cache=cache,
                               shard=shard)


# -- estimate and actual, side by side -------------------------------------------------------------------------

COMPARED = ("calls", "tokens_in", "tokens_out", "seconds")


def save_comparison(eng, run_id: str, estimate: Estimate, actual: dict[str, float]) -> None:
    """Store a run's estimate next to what it actually spent."""
    import time

    from taskfit.db import upsert

    with eng.begin() as conn:
        upsert(conn, "estimates", [{"run_id": run_id, "created": time.time(), "estimate": json.dumps(estimate.to_dict()),
                                    "actual": json.dumps(actual)}], key=["run_id"])


def comparison(eng, run_id: str) -> tuple[dict[str, Any], dict[str, float]] | None:
    with eng.connect() as conn:
        row = conn.execute(text("SELECT estimate, actual FROM estimates WHERE run_id = :r"), {"r": run_id}).first()
    return (json.loads(row[0]), json.loads(row[1])) if row else None


def compare_runs(eng, estimates: list[Estimate], runs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Match finished runs, given as (strategy, model, run id), to their estimates; store both and return per
    run the strategy, model and each compared figure as (estimate, actual). A run compared before (a finished
    run reused, whose calls are all cached now) keeps the estimate made before it ran."""
    from taskfit.store import Store

    store = Store(eng)
    by_arm = {(e.strategy, e.model): e for e in estimates}
    out = []
    for strategy, model, run_id in runs:
        est = by_arm.get((strategy, model))
        if est is None:
            continue
        stored = comparison(eng, run_id)
        if stored is not None:
            figures, actual = stored
        else:
            actual = actual_from_predictions(store.predictions(run_id))
            save_comparison(eng, run_id, est, actual)
            figures = est.to_dict()
        out.append({"strategy": strategy, "model": model, "run_id": run_id,
                    **{k: (figures[k], actual[k]) for k in COMPARED}})
    return out


def estimate_optimize(task_path: str, cache: CallCache, config, *, model: str | None = None,
                      limit: int | None = None) -> tuple[Task, list[Estimate]]:
    """The estimate of ``taskfit optimize``: the search spends at most ``config.budget`` calls, each costing
    what a base strategy's call costs on the dev rows (on average); then the winner and zero-shot run on the
    test rows, the winner priced as the dearest base strategy."""
    from taskfit.errors import TaskfitError
    from taskfit.optimize.search import dev_split
    from taskfit.study import prepare, select_arms

    task, dataset = prepare(task_path)
    model_spec = select_arms(task, ["zero_shot"], [model] if model else None)[0].model
    demo_pool, dev = dev_split(dataset, config)
    bases = []
    for name in dict.fromkeys(["zero_shot", *config.strategies]):
        spec = StrategySpec.model_validate({"name": name, **({"k": config.k} if name != "zero_shot" else {})})
        try:
            bases.append((spec, estimate_examples(task, dev, spec, model_spec, cache, train=demo_pool)))
        except TaskfitError:  # a base the task cannot build (cot without worked solutions) is not searched
            continue
    per_call = {k: sum(getattr(e, k) for _, e in bases) / max(1, sum(e.calls for _, e in bases))
                for k in ("tokens_in", "tokens_out", "seconds")}
    search = Estimate(strategy="search (at most the budget)", model=model_spec.label(), n=len(dev),
                      calls=config.budget, **{k: v * config.budget for k, v in per_call.items()},
                      time_basis=bases[0][1].time_basis if bases else "")
    search.dollars = (search.tokens_in * model_spec.price_in_per_1m + search.tokens_out * model_spec.price_out_per_1m) / 1e6
    limit = task.config.limit if limit is None else (limit or None)
    test = dataset.split("test")[:limit] if limit else dataset.split("test")
    dearest = max(bases, key=lambda b: b[1].tokens_in + b[1].tokens_out)[0] if bases else StrategySpec(name="zero_shot")
    rows = [search]
    for label, spec in ((f"test: winner (as {dearest.label()})", dearest), ("test: zero_shot", StrategySpec(name="zero_shot"))):
        est = estimate_examples(task, test, spec, model_spec, cache, train=demo_pool)
        est.strategy = label
        rows.append(est)
    return task, rows
