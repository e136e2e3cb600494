"""The search, top-down: dev split -> bootstrapped demos -> seed candidates -> first rung -> proposed
instructions -> race -> winner; then ``optimize`` saves the winner and compares it with the zero-shot baseline,
once, on the test split, which the search never sees."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Dataset, Example
from taskfit.errors import TaskfitError
from taskfit.metrics import build_metric
from taskfit.optimize.bootstrap import keep_correct
from taskfit.optimize.budget import BudgetSpent, CallMeter, DryRunLM, MeteredLM
from taskfit.optimize.candidates import Candidate, Demo, ProgramSpec, demo_sets, to_demo
from taskfit.optimize.propose import propose
from taskfit.optimize.racing import Race, first_rung, planned_calls, rung_sizes
from taskfit.prompts import prompt_parts
from taskfit.strategies import StrategyContext
from taskfit.strategies.optimized import build
from taskfit.taskfile import Task

Progress = Callable[[dict[str, Any]], None]
MIN_FIRST_RUNG = 8  # fewer dev rows than this tell candidates apart by luck
MAX_SHOWN = 8  # earlier instructions shown to the proposer, best first


class OptimizeConfig(BaseModel):
    """Settings of one search; saved with its result."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(ge=1, description="Most model calls the search may make (task model and teacher together).")
    strategies: list[Literal["zero_shot", "few_shot", "cot"]] = Field(
        default_factory=lambda: ["zero_shot", "few_shot"], description="Base strategies the search may choose among.")
    k: int = Field(4, ge=1, description="Demonstrations per few-shot or cot candidate.")
    demo_sets: int = Field(2, ge=0, description="Demo sets tried per base strategy (bootstrapped, then labelled).")
    instructions: int = Field(4, ge=0, description="Instructions to ask the proposer for, per round.")
    rounds: int = Field(3, ge=1, description="Proposal rounds; each later one sees the scores of earlier "
                        "candidates and runs only while the budget can still score a newcomer.")
    dev_size: int | None = Field(None, ge=2, description="Dev rows for the race. Default: the task's dev split, "
                                 "else half of train (at most 200), held out from the demo pool.")
    bootstrap_rows: int | None = Field(None, ge=1, description="Train rows run to bootstrap demos. "
                                       "Default: a tenth of the budget, at least 2k.")
    first_rung: int | None = Field(None, ge=1, description="Dev rows in the first rung. Default: the largest that "
                                   "lets the planned race fit the budget.")
    eta: float = Field(2.0, gt=1, description="Each rung keeps 1/eta of the field and is eta times larger.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level for dropping a candidate.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of instruction proposals (OPRO's).")
    cot_max_tokens: int = Field(128, ge=1, description="Reasoning length limit for cot candidates.")
    seed: int = Field(0, description="Seed for the dev split, demo choice and proposals.")


@dataclass
class SearchResult:
    winner: Candidate
    candidates: list[Candidate]
    race: Race
    stop: str  # why the race ended
    calls: int  # counted against the budget
    sent: int  # of those, calls that reached a model
    dev: list[Example]
    seconds: float

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: what it is, its dev score with CI, its calls, whether it was dropped."""
        out = []
        for c in self.candidates:
            e = self.race.entrants.get(c.key)
            standing = self.race.standing(e) if e else {"n": 0, "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
            out.append({"key": c.key, "origin": c.origin, "describe": c.describe(), "program": c.program.model_dump(),
                        **{k: standing[k] for k in ("n", "mean", "ci_low", "ci_high")},
                        "dev_ids": [ex.id for ex in self.dev[:standing["n"]]],
                        "scores": e.scores if e else [], "calls": e.calls if e else 0,
                        "status": "winner" if c is self.winner else (e.dropped if e and e.dropped else "in the race")})
        return out


def dev_split(dataset: Dataset, config: OptimizeConfig) -> tuple[list[Example], list[Example]]:
    """(demo pool, dev rows) from the train and dev splits only; the test split is not touched."""
    train = dataset.splits.get("train") or []
    dev = dataset.splits.get("dev") or []
    if dev:
        return train, dev[:config.dev_size] if config.dev_size else dev
    if len(train) < 4:
        raise TaskfitError(f"optimize needs a dev split or a train split of at least 4 rows to hold dev rows out "
                           f"of (train has {len(train)})", field="data.train")
    order = list(train)
    random.Random(config.seed).shuffle(order)
    n_dev = config.dev_size or min(200, len(train) // 2)
    if n_dev >= len(train):
        raise TaskfitError(f"dev_size {n_dev} leaves no train rows for demonstrations (train has {len(train)})",
                           field="dev_size")
    return order[n_dev:], order[:n_dev]


def search(task: Task, pool: list[Example], dev: list[Example], lm: MeteredLM, meter: CallMeter,
           config: OptimizeConfig, mode: str, *, teacher: MeteredLM | None = None,
           progress: Progress | None = None, workspace: Any = None) -> SearchResult:
    """Find the best prompt program on ``dev`` within ``meter``'s budget. Reads only ``pool`` and ``dev``
    (and, for a metric that keeps state such as a judge's call cache, ``workspace``)."""
    started = time.perf_counter()
    c = task.config
    parts = prompt_parts(task)
    ctx = StrategyContext(task=task, parts=parts, train=pool, mode=mode, seed=config.seed,  # type: ignore[arg-type]
                          workspace=workspace)
    metric = build_metric(c.metrics[0].name, c.metrics[0].options, workspace)
    say = _reporter(meter, progress)

    def scores(program: ProgramSpec, rows: list[Example], on: MeteredLM) -> list[float]:
        preds = build(program, ctx).predict(rows, on)
        return [0.0 if p.answer is None else float(metric(p.answer, ex)) for p, ex in zip(preds, rows, strict=True)]

    def cost(program: ProgramSpec, rows: list[Example]) -> int:
        return meter.cost(lambda dry: build(program, ctx).predict(rows, dry), lm)  # type: ignore[arg-type]

    candidates: list[Candidate] = []

    def add(program: ProgramSpec, origin: str) -> Candidate:
        cand = Candidate(f"c{len(candidates)}", program, origin)
        candidates.append(cand)
        say({"event": "candidate", "key": cand.key, "origin": origin, "describe": cand.describe()})
        return cand

    baseline = add(ProgramSpec(base="zero_shot", instruction=parts.instruction), "baseline")
    rng = random.Random(config.seed)
    sample = rng.sample(pool, min(len(pool), config.bootstrap_rows or max(2 * config.k, config.budget // 10)))
    labelled = [to_demo(ex, c.inputs, "labelled") for ex in pool]

    def bootstrap(program: ProgramSpec, with_rationale: bool) -> list[Demo]:
        rows = list(sample)
        while rows and cost(program, rows) > meter.remaining // 4:  # demos may take a quarter of what is left
            rows = rows[:len(rows) // 2]
        if not rows:
            return []
        preds = build(program, ctx).predict(rows, lm)
        found = keep_correct(rows, preds, metric, c.inputs, with_rationale)
        say({"event": "bootstrap", "base": program.base, "rows": len(rows), "kept": len(found)})
        return found

    for base in ("few_shot", "cot"):
        if base not in config.strategies or not pool or not config.demo_sets:
            continue
        opts = {"max_tokens": config.cot_max_tokens} if base == "cot" else {}
        runner = baseline.program if base == "few_shot" else ProgramSpec(base="cot", instruction=parts.instruction,
                                                                         options=opts)
        try:
            booted = bootstrap(runner, with_rationale=base == "cot")
        except BudgetSpent:
            booted = []
        # cot demos need reasoning, which only bootstrapped traces have
        for origin, demos in demo_sets(booted, labelled if base == "few_shot" else [], config.k, config.demo_sets,
                                       config.seed, c.labels):
            add(ProgramSpec(base=base, instruction=parts.instruction, demos=demos, options=opts), origin)

    # plan the first rung for every candidate the search will make: seeds, then each proposal with zero_shot
    # and with the best demo set
    proposal_bases = int("zero_shot" in config.strategies) + int(len(candidates) > 1)
    calibrated = mode == "score" and bool(c.calibrate)
    n_instructions = config.instructions

    def planned(n_instr: int, rows: int) -> int:
        n = len(candidates) + n_instr * proposal_bases
        return n_instr + planned_calls(n, rows, len(dev), config.eta, per_candidate=int(calibrated))

    # a small budget asks for fewer proposals rather than scoring everything on a handful of rows
    while n_instructions and planned(n_instructions, min(MIN_FIRST_RUNG, len(dev))) > meter.remaining:
        n_instructions -= 1
    n_planned = len(candidates) + n_instructions * proposal_bases
    first = config.first_rung or first_rung(n_planned, len(dev), meter.remaining - n_instructions, config.eta,
                                            smallest=MIN_FIRST_RUNG, per_candidate=int(calibrated))
    sizes = rung_sizes(first, len(dev), config.eta)
    race = Race(dev, lambda key, rows: scores(_by_key(candidates, key).program, rows, lm),
                lambda key, rows: cost(_by_key(candidates, key).program, rows), meter,
                binary=metric.binary, alpha=config.alpha, eta=config.eta, progress=say)
    for cand in candidates:
        race.add(cand.key)
    say({"event": "rung_start", "rows": sizes[0], "alive": len(race.alive)})
    race.evaluate_to(sizes[0])
    if race.common() == 0:
        raise TaskfitError(f"a budget of {config.budget} calls cannot score the candidates on a single dev row "
                           f"({meter.used} went to bootstrapping demos); raise --budget", field="budget")

    stop = ""
    shown = rng.sample(pool, min(3, len(pool)))
    for round_no in range(config.rounds if n_instructions else 0):
        # later rounds (OPRO's iterations) see every earlier score; they ask for only as many instructions as the
        # rest of the budget can race against the candidates left (whose rows already scored cost nothing)
        n_ask = n_instructions
        if round_no:
            while n_ask and n_ask + planned_calls(len(race.alive) + n_ask * proposal_bases, MIN_FIRST_RUNG, len(dev),
                                                  config.eta, int(calibrated)) > meter.remaining:
                n_ask -= 1
            if not n_ask:
                break
        history: dict[str, float] = {}
        for cand in candidates:
            e = race.entrants[cand.key]
            if e.scores:
                history[cand.program.instruction] = max(history.get(cand.program.instruction, 0.0), e.mean())
        scored = sorted(history.items(), key=lambda x: -x[1])[:MAX_SHOWN]
        try:
            new = propose(teacher or lm, c.description or c.name, parts, shown, scored,
                          min(n_ask, int(max(0, meter.remaining))), config.seed + round_no,
                          config.temperature)
        except BudgetSpent:
            new = []
        say({"event": "proposed", "round": round_no + 1, "n": len(new), "instructions": new})
        best_demo = max((x for x in candidates if x.program.demos and race.entrants[x.key].scores), default=None,
                        key=lambda x: race.entrants[x.key].mean())
        for text in new:
            if "zero_shot" in config.strategies:
                race.add(add(ProgramSpec(base="zero_shot", instruction=text), f"proposed (round {round_no + 1})").key)
            if best_demo is not None:
                program = best_demo.program.model_copy(update={"instruction": text})
                race.add(add(program, f"proposed (round {round_no + 1}) + {best_demo.key}'s demos").key)
        if not config.first_rung:
            # plan this round's rungs for the field as it is (fewer usable proposals than asked for leave more
            # rows per candidate); in round 1 the seeds' first rung is already paid for
            spent = sum(e.calls for e in race.entrants.values()) if round_no == 0 else 0
            bigger = first_rung(len(race.alive), len(dev), meter.remaining + spent, config.eta,
                                smallest=sizes[0] if round_no == 0 else MIN_FIRST_RUNG, per_candidate=int(calibrated))
            sizes = rung_sizes(bigger, len(dev), config.eta)
        stop = race.run(sizes)
        if stop == "budget spent":
            break
    if not stop:
        stop = race.run(sizes)
    winner = _by_key(candidates, race.leader().key)
    say({"event": "search_done", "stop": stop, "winner": winner.key})
    return SearchResult(winner, candidates, race, stop, meter.used, meter.sent, dev, time.perf_counter() - started)


def _by_key(candidates: list[Candidate], key: str) -> Candidate:
    return next(x for x in candidates if x.key == key)


def _reporter(meter: CallMeter, progress: Progress | None) -> Progress:
    def say(event: dict[str, Any]) -> None:
        if progress:
            progress({**event, "calls": meter.used, "budget": meter.budget})
    return say


def prompt_text(program: ProgramSpec, task: Task, mode: str) -> str:
    """The program's prompt as readable text, for an input whose fields are shown as <field>."""
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=[], mode=mode)  # type: ignore[arg-type]
    example = Example(id="input", fields={f: f"<{f}>" for f in task.config.inputs}, target="")
    dry = DryRunLM("prompt", can_score=True)
    build(program, ctx).predict([example], dry)  # type: ignore[arg-type]
    step, request = next((s, r) for s, r in dry.log if s != "calibration")
    lines = [f"[{m['role']}]\n{m.get('content') or ''}" for m in request.messages]
    if step == "score":
        lines.append(f"(the reply continues with the most likely of: {' | '.join(s.strip() for s in request.continuations)})")
    return "\n\n".join(lines)
