"""Each step of a chain teacher distilled into its own student, and the chain run with the students.

The teacher's stored trace of each labelled row holds every step's exact prompt and reply; step k's student
learns the teacher's reply to step k, given the teacher's outputs of the earlier steps (so the steps train
independently). The chain then runs with each step on its own student (``steps[].model``).
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

from taskfit.dataset import Example
from taskfit.distill.label import Labelled
from taskfit.errors import TaskfitError
from taskfit.runner import Arm
from taskfit.store import Store
from taskfit.strategies.chain import ChainOptions
from taskfit.strategies.options import parse_options
from taskfit.taskfile import ModelSpec, StrategySpec, Task
from taskfit.tuning.spec import TuneSpec
from taskfit.tuning.store import TuneRecord
from taskfit.workspace import Workspace


def step_rows(options: ChainOptions, labelled: Labelled, store: Store) -> dict[str, list[Example]]:
    """Training rows per step: the row's fields plus ``steps`` (the teacher's earlier outputs), and the teacher's
    reply to that step as the target. Rows on which the teacher did not finish the step are left out."""
    fields = {ex.id: ex.fields for ex in labelled.examples}
    out: dict[str, list[Example]] = {s.name: [] for s in options.steps}
    for p in store.predictions(labelled.run_id):
        if p.example_id not in fields:
            continue
        trace = p.trace or {}
        outputs = (trace.get("details") or {}).get("steps") or {}
        replies = {c["step"]: c["output"][0] for c in trace.get("calls", []) if c.get("output") and not c.get("error")}
        earlier: dict = {}
        for step in options.steps:
            if step.name not in replies or step.name not in outputs:
                break
            out[step.name].append(Example(id=p.example_id, fields={**fields[p.example_id], "steps": dict(earlier)},
                                          target=replies[step.name]))
            earlier[step.name] = outputs[step.name]
    return out


def step_task(task: Task, chain_label: str, step_row: StrategySpec) -> Task:
    """The task as one step's student learns it: free text (the step's reply) to the step's prompt."""
    prompt = task.config.prompt.model_copy(update={"response_prefix": ""})
    config = task.config.model_copy(update={"labels": None, "prompt": prompt, "strategies": [step_row]})
    return Task(config, task.path, yaml.safe_dump(config.model_dump(mode="json")))


def distill_steps(task: Task, teacher: Arm, labelled: Labelled, base: TuneSpec, name: str, *,
                  workspace: Workspace, log: Callable[[str], None] = lambda s: None,
                  on_step: Callable[[str, dict[str, float]], None] | None = None,
                  ) -> tuple[Arm, dict[str, TuneRecord]]:
    """Train one student per step of the chain teacher; returns the chain arm running on the students."""
    from taskfit.tuning.tune import tune

    if teacher.strategy.name != "chain":
        raise TaskfitError(f"per_step distillation needs a chain teacher, not {teacher.strategy.name}",
                           file=str(task.path), field="distill[].per_step")
    if base.objective != "sft":
        raise TaskfitError("per_step distillation needs an sft student (each step writes text)",
                           file=str(task.path), field="distill[].student")
    chain_label = teacher.strategy.label()
    options = parse_options(ChainOptions, teacher.strategy)
    rows = step_rows(options, labelled, workspace.runs)
    records: dict[str, TuneRecord] = {}
    for step in options.steps:
        if not rows[step.name]:
            raise TaskfitError(f"the teacher finished step {step.name!r} on no row; nothing to train its student on")
        row = StrategySpec(name="chain_step", id=f"{chain_label}.{step.name}", chain=chain_label,
                           step=step.model_dump(exclude={"model"}))
        sname = f"{name}.{step.name}"
        spec = base.model_copy(update={"name": sname, "strategy": row.label(), "train_limit": None})
        log(f"training the student of step {step.name} on {len(rows[step.name])} of the teacher's replies")
        records[step.name] = tune(step_task(task, chain_label, row), rows[step.name], spec, store=workspace.tunes, log=log,
                                  on_step=(lambda p, n=sname: on_step(n, p)) if on_step else None)
    steps = [{**s.model_dump(), "model": f"tuned:{records[s.name].id}"} for s in options.steps]
    chain = StrategySpec(name="chain", id=f"{chain_label}~students", steps=steps)
    last = records[options.steps[-1].name]
    return Arm(chain, ModelSpec(backend="tuned", path=f"tuned:{last.id}", name=name)), records
