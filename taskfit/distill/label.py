"""The teacher's labels: a strategy x model answers the inputs a student will learn from.

Every call goes through the call cache (a rerun is free and a killed run resumes), the labelling is stored as a
run (``split`` = ``distill``; `taskfit show RUN` lists what the teacher said), and a budget in calls or dollars
stops it before it overspends. ``estimate`` prices the labelling without calling a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from taskfit.backends import Backend
from taskfit.cache import CallCache
from taskfit.dataset import Example, MissingValue, check_inputs, read_rows, row_id
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.metrics import build_metric, score_batch
from taskfit.optimize.budget import BudgetSpent, CallMeter
from taskfit.prompts import prompt_parts
from taskfit.runner import CHUNK, Arm, _row, package_versions, resolve_mode
from taskfit.store import Store
from taskfit.strategies import StrategyContext, strategies
from taskfit.taskfile import Task
from taskfit.types import PredictionRow
from taskfit.workspace import Workspace

SPLIT = "distill"  # the split name of a labelling run in the store


@dataclass
class Budget:
    """What the teacher may spend: calls (cache hits count, so a rerun decides the same) and/or dollars."""

    calls: int | None = None
    dollars: float | None = None


@dataclass
class LabellingCost:
    """What labelling cost: model completions requested, tokens, dollars at the teacher model's prices."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    dollars: float = 0.0
    rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Estimate(LabellingCost):
    """A labelling priced before any call: per-row figures from the requests a dry run records."""

    cached: int = 0  # of ``calls``, how many the call cache already holds
    seconds: float = 0.0  # expected model time of the calls still to make
    per_row: list[tuple[int, float]] = field(default_factory=list, repr=False)  # (calls, dollars) per row


@dataclass
class Labelled:
    """The teacher's answers: examples whose target is the teacher's answer, its raw replies, what it cost."""

    examples: list[Example]
    outputs: dict[str, str]
    rationales: dict[str, str]  # reasoning teachers: the reasoning before the answer, by row id
    run_id: str
    cost: LabellingCost
    unanswered: int  # rows the teacher failed on or whose reply did not parse (left out)
    stopped: str | None = None  # why labelling stopped early (the budget), else None


def parse_teacher(task: Task, teacher: str) -> Arm:
    """``<strategy>@<model>`` as an arm of the task (a row name or a registered name on either side)."""
    from taskfit.study import select_arms

    strategy, sep, model = teacher.rpartition("@")
    if not sep or not strategy or not model:
        raise TaskfitError(f"--teacher {teacher!r}: write it as <strategy>@<model>, e.g. structured@smollm2-135m",
                           file=str(task.path), field="distill[].teacher")
    return select_arms(task, [strategy], [model])[0]


def load_unlabeled(task: Task) -> list[Example]:
    """The rows of ``data.unlabeled``: the input fields are required, an output field is ignored."""
    rel = task.config.data.unlabeled
    if not rel:
        return []
    path = task.resolve(rel)
    c = task.config
    out = []
    for lineno, row in read_rows(path):
        try:
            check_inputs(task, path, lineno, row)
        except MissingValue:
            if c.data.on_missing == "skip":
                continue
            raise
        out.append(Example(id=row_id(task, path, lineno, row), fields={k: row[k] for k in row if k != c.output},
                           target="", source=f"{path}:{lineno}"))
    return out


def _context(task: Task, demos: list[Example], mode: str, workspace: Workspace | None = None) -> StrategyContext:
    return StrategyContext(task=task, parts=prompt_parts(task), train=demos, mode=mode, seed=task.config.data.seed,
                           workspace=workspace)


def _dollars(arm: Arm, tokens_in: float, tokens_out: float) -> float:
    return (tokens_in * arm.model.price_in_per_1m + tokens_out * arm.model.price_out_per_1m) / 1e6


def estimate(task: Task, arm: Arm, rows: list[Example], *, cache: CallCache, demos: list[Example],
             mode: str | None = None) -> Estimate:
    """Calls, tokens and dollars the teacher would spend on ``rows``, without loading or calling its model: the
    dry run of ``taskfit run --dry-run`` (taskfit.estimate), whose expected reply lengths and call counts follow
    the strategy's own steps. ``calls`` includes those the cache already holds; tokens and dollars are those
    still to spend; ``per_row`` prices every row in full, as the budget counts."""
    from taskfit.estimate import estimate_examples

    dry = estimate_examples(task, rows, arm.strategy, arm.model, cache, train=demos, mode=mode)
    est = Estimate(rows=len(rows), calls=sum(r.calls for r in dry.per_row), cached=sum(r.cached for r in dry.per_row),
                   tokens_in=round(dry.tokens_in), tokens_out=round(dry.tokens_out), dollars=dry.dollars,
                   seconds=dry.seconds)
    est.per_row = [(r.calls, _dollars(arm, r.tokens_in, r.tokens_out)) for r in dry.per_row]
    return est


def affordable(est: Estimate, budget: Budget | None) -> int:
    """How many of the estimated rows, in order, fit the budget."""
    if budget is None:
        return est.rows
    calls = dollars = 0.0
    for n, (c, d) in enumerate(est.per_row):
        calls, dollars = calls + c, dollars + d
        if (budget.calls is not None and calls > budget.calls) or (budget.dollars is not None and dollars > budget.dollars):
            return n
    return est.rows


def label(task: Task, arm: Arm, rows: list[Example], *, backend: Backend, workspace: Workspace,
          demos: list[Example], budget: Budget | None = None,
          progress: Callable[[int, int], None] | None = None) -> Labelled:
    """The teacher's answers to ``rows`` (stored as a run in ``workspace``, resumable; calls through its cache);
    stops before the budget is passed."""
    c = task.config
    store, cache = workspace.runs, workspace.cache
    mode = resolve_mode(task, backend)
    key = _label_key(task, arm, rows, mode)
    run = store.latest(key) or store.create(
        key=key, study=f"distill-{key[:8]}", task_name=c.name, task_path=str(task.path), task_hash=task.config_hash,
        data_hash=_rows_hash(rows), strategy=arm.strategy.label(), model=arm.model.label(), model_id=backend.model_id,
        split=SPLIT, n_total=len(rows), versions=package_versions(task.root),
        config={"task": c.model_dump(), "strategy": arm.strategy.model_dump(), "model": arm.model.model_dump(),
                "mode": mode, "limit": None, "backend": backend.describe(), "distill": "teacher labels"})
    stopped = None
    todo_rows = rows
    if budget and (budget.calls is not None or budget.dollars is not None):
        est = estimate(task, arm, rows, cache=cache, demos=demos, mode=mode)
        fit = affordable(est, budget)
        if fit < len(rows):
            stopped = f"budget: {fit} of {len(rows)} rows fit ({_budget_text(budget)})"
            todo_rows = rows[:fit]
    strategy = strategies.get(arm.strategy.name)(arm.strategy, _context(task, demos, mode, workspace))
    meter = CallMeter(budget.calls if budget else None)
    lm = meter.lm(LM(backend, cache))
    metric_fns = [(m.name, task.metric_objects.get(m.name) or build_metric(m.name, m.options, workspace))
                  for m in c.metrics]
    done = store.done_ids(run.id)
    seen: set[str] = set()
    spent = _spent(store, run.id, arm, seen)
    todo = [(i, ex) for i, ex in enumerate(todo_rows) if ex.id not in done]
    meter.used = spent.calls
    for start in range(0, len(todo), CHUNK):
        if budget and budget.dollars is not None and spent.dollars >= budget.dollars:
            stopped = stopped or f"budget: ${spent.dollars:.4f} spent of ${budget.dollars:g}"
            break
        chunk = todo[start:start + CHUNK]
        try:
            preds = strategy.predict([ex for _, ex in chunk], lm)
        except BudgetSpent as e:
            stopped = f"budget: {e}"
            break
        exs = [ex for _, ex in chunk]
        scored = {name: score_batch(fn, [p.answer for p in preds], exs) for name, fn in metric_fns}
        pred_rows = [_row(run.id, i, ex, p, {name: s[k] for name, s in scored.items()}, c.inputs)
                     for k, ((i, ex), p) in enumerate(zip(chunk, preds, strict=True))]
        store.add_predictions(pred_rows)
        spent.calls += sum(_model_calls(r, seen) for r in pred_rows)
        spent.dollars += _dollars(arm, sum(r.tokens_in for r in pred_rows), sum(r.tokens_out for r in pred_rows))
        if progress:
            progress(len(done) + start + len(chunk), len(todo_rows))
    if not stopped:
        store.finish(run.id)
    return _collect(store, run.id, arm, rows, stopped)


def _collect(store: Store, run_id: str, arm: Arm, rows: list[Example], stopped: str | None) -> Labelled:
    by_id = {ex.id: ex for ex in rows}
    examples, outputs, rationales = [], {}, {}
    cost = LabellingCost()
    unanswered = 0
    seen: set[str] = set()
    for p in store.predictions(run_id):
        ex = by_id.get(p.example_id)
        if ex is None:
            continue
        cost.rows += 1
        cost.calls += _model_calls(p, seen)
        cost.tokens_in += p.tokens_in
        cost.tokens_out += p.tokens_out
        if p.answer is None or p.failed:
            unanswered += 1
            continue
        outputs[ex.id] = p.output
        reasoning = ((p.trace or {}).get("details") or {}).get("reasoning") or p.output
        rationales[ex.id] = reasoning_before_answer(reasoning)
        examples.append(Example(id=ex.id, fields=ex.fields, target=p.answer, answers=(p.answer,), source=ex.source))
    cost.dollars = _dollars(arm, cost.tokens_in, cost.tokens_out)
    order = {ex.id: i for i, ex in enumerate(rows)}
    examples.sort(key=lambda e: order[e.id])
    return Labelled(examples=examples, outputs=outputs, rationales=rationales, run_id=run_id, cost=cost,
                    unanswered=unanswered, stopped=stopped)


def reasoning_before_answer(text: str) -> str:
    """A reasoning reply without the sentence that states its answer ("The answer is ...", "#### ...")."""
    from taskfit.answering import _FINAL

    matches = list(_FINAL.finditer(text))
    return (text[: matches[-1].start()] if matches else text).strip()


def _model_calls(p: PredictionRow, seen: set[str]) -> int:
    """Completions a row adds to the labelling: each distinct request once (a calibration prompt shared by
    every row is one call, as the budget counts it), cache hits included; ``seen`` holds those counted."""
    from taskfit.estimate import first_requests

    calls = (p.trace or {}).get("calls")
    if calls is None:
        return p.calls
    return sum(int(c["params"].get("n", 1)) for c in first_requests(calls, seen))


def _spent(store: Store, run_id: str, arm: Arm, seen: set[str]) -> LabellingCost:
    ps = store.predictions(run_id)
    return LabellingCost(calls=sum(_model_calls(p, seen) for p in ps),
                         dollars=_dollars(arm, sum(p.tokens_in for p in ps), sum(p.tokens_out for p in ps)))


def _budget_text(budget: Budget) -> str:
    parts = ([f"{budget.calls} calls"] if budget.calls is not None else []) + (
        [f"${budget.dollars:g}"] if budget.dollars is not None else [])
    return " and ".join(parts)


def _rows_hash(rows: list[Example]) -> str:
    h = hashlib.sha256()
    for ex in rows:
        h.update(json.dumps([ex.id, ex.fields], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _label_key(task: Task, arm: Arm, rows: list[Example], mode: str) -> str:
    # "demos": labels stored before a teacher's demonstrations left out the row it labels (and copies of its
    # input) are not reused, so no stored label comes from a prompt that showed the answer
    payload = {"task": task.config_hash, "rows": _rows_hash(rows), "strategy": arm.strategy.model_dump(),
               "model": arm.model.model_dump(), "mode": mode, "kind": "distill-labels", "demos": "apart"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
