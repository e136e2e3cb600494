"""One optimization run, start to end: load the task, search on train/dev within the budget, save the winner,
then (and only then) score the winner and the zero-shot baseline once on the test split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taskfit.leaderboard import rows
from taskfit.lm import LM
from taskfit.optimize.budget import CallMeter
from taskfit.optimize.search import OptimizeConfig, Progress, SearchResult, dev_split, prompt_text, search
from taskfit.optimize.store import OptimizationRecord
from taskfit.runner import Arm, BackendPool, ProgressFn, evaluate, package_versions, resolve_mode
from taskfit.study import prepare, select_arms
from taskfit.taskfile import StrategySpec
from taskfit.types import LeaderboardRow

if TYPE_CHECKING:
    from taskfit.store import RunRecord
    from taskfit.workspace import Workspace


@dataclass
class Outcome:
    record: OptimizationRecord
    search: SearchResult
    test_rows: list[LeaderboardRow]  # leaderboard rows: the optimized program and the baseline on test


def optimize(task_path: str | Path, config: OptimizeConfig, *, workspace: Workspace, model: str | None = None,
             teacher: str | None = None,
             limit: int | None = None, progress: Progress | None = None, test_progress: ProgressFn | None = None,
             pool: BackendPool | None = None, on_run: Callable[[RunRecord], None] | None = None) -> Outcome:
    """Search, save, then compare with the baseline on the first ``limit`` test rows (the task's limit by default)."""
    task, dataset = prepare(task_path)
    model_spec = select_arms(task, ["zero_shot"], [model] if model else None)[0].model
    teacher_spec = select_arms(task, ["zero_shot"], [teacher])[0].model if teacher else None
    demo_pool, dev = dev_split(dataset, config)
    pool = pool or BackendPool(workspace)
    cache = workspace.cache
    backend = pool.get(model_spec)
    mode = resolve_mode(task, backend)
    meter = CallMeter(config.budget)
    lm = meter.lm(LM(backend, cache))
    teacher_lm = meter.lm(LM(pool.get(teacher_spec), cache)) if teacher_spec else None

    result = search(task, demo_pool, dev, lm, meter, config, mode, teacher=teacher_lm, progress=progress,
                    workspace=workspace)

    # the search is over: from here on the test split may be read
    winner = result.race.standing(result.race.entrants[result.winner.key])
    base = result.race.standing(result.race.entrants["c0"])
    store = workspace.optimizations
    record = store.create(
        status="running", task_name=task.config.name, task_path=str(task.path), task_hash=task.config_hash,
        data_hash=dataset.hash, model=model_spec.label(), model_id=backend.model_id, budget=config.budget,
        calls=result.calls, calls_sent=result.sent, program=result.winner.program.model_dump(),
        prompt=prompt_text(result.winner.program, task, mode), candidates=result.table(),
        report={"stop": result.stop, "search_s": result.seconds, "winner": result.winner.key,
                "dev": {"winner": winner, "baseline": base}},
        config={"optimize": config.model_dump(), "model": model_spec.model_dump(),
                "teacher": teacher_spec.model_dump() if teacher_spec else None, "mode": mode,
                "dev_ids": [ex.id for ex in dev], "demo_pool_size": len(demo_pool)},
        versions=package_versions(task.root))

    started = time.perf_counter()
    optimized = StrategySpec.model_validate({"name": "optimized", "run": record.id, "id": f"optimized:{record.id}"})
    arms = [Arm(optimized, model_spec), Arm(StrategySpec(name="zero_shot"), model_spec)]
    limit = task.config.limit if limit is None else (limit or None)
    records = evaluate(task, dataset, arms, split="test", limit=limit, workspace=workspace, pool=pool,
                       progress=test_progress, study=f"optimize-{record.id}", on_run=on_run)
    table = rows(workspace, records)
    by_strategy = {r.strategy: r for r in table}
    test = {"winner": by_strategy[optimized.label()], "baseline": by_strategy["zero_shot"]}
    report = {**record.report, "test_s": time.perf_counter() - started,
              "test": {k: {f: getattr(r, f) for f in ("n", "score", "ci_low", "ci_high", "p_vs_best", "calls", "run_id")}
                       for k, r in test.items()},
              "gap": {k: record.report["dev"][k]["mean"] - test[k].score for k in ("winner", "baseline")}}
    store.finish(record.id, report)
    return Outcome(store.get(record.id), result, table)  # type: ignore[arg-type]
