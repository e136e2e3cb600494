"""What the search varies: a prompt program (base strategy, instruction, demonstrations), and demo sets to try."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example

BASES = ("zero_shot", "few_shot", "cot")  # strategies a program can be built on (one model call per query)


class Demo(BaseModel):
    """A solved example shown to the model: kept by id and by text, so a saved program needs no data file."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Id of the train row it came from.")
    fields: dict[str, Any] = Field(description="The row's input fields.")
    target: str = Field(description="The expected answer.")
    rationale: str | None = Field(None, description="Worked reasoning (cot), from a bootstrapped trace.")
    source: Literal["bootstrapped", "labelled"] = Field(
        "labelled", description="bootstrapped: the model answered it correctly on its own; labelled: taken as-is.")

    def example(self) -> Example:
        return Example(id=self.id, fields=self.fields, target=self.target, answers=(self.target,))


class ProgramSpec(BaseModel):
    """A prompt program: everything needed to rebuild the prompt exactly."""

    model_config = ConfigDict(extra="forbid")
    base: Literal["zero_shot", "few_shot", "cot"] = Field(description="The strategy the program runs.")
    instruction: str = Field(description="Replaces prompt.instruction of the task file.")
    demos: list[Demo] = Field(default_factory=list, description="Demonstrations, in order.")
    options: dict[str, Any] = Field(default_factory=dict, description="Further options for the base strategy.")


@dataclass
class Candidate:
    key: str  # "c0", "c1", ... in the order candidates were created
    program: ProgramSpec
    origin: str  # how it was made: "baseline", "demos: bootstrapped", "proposed (round 1)"

    def describe(self, width: int = 70) -> str:
        p = self.program
        instr = p.instruction if len(p.instruction) <= width else p.instruction[:width - 3] + "..."
        demos = f", {len(p.demos)} demos" if p.demos else ""
        return f"{p.base}{demos}: \"{instr}\""


def to_demo(ex: Example, inputs: list[str], source: Literal["bootstrapped", "labelled"],
            rationale: str | None = None) -> Demo:
    return Demo(id=ex.id, fields={k: ex.fields[k] for k in inputs}, target=ex.target, rationale=rationale, source=source)


def pick_demos(pool: list[Demo], k: int, rng: random.Random, labels: list[str] | None) -> list[Demo]:
    """k demos from ``pool``: with a label set, as many per label as possible, labels interleaved."""
    pool = list(pool)
    rng.shuffle(pool)
    if not labels:
        return pool[:k]
    by_label: dict[str, list[Demo]] = {}
    for d in pool:
        by_label.setdefault(d.target, []).append(d)
    out: list[Demo] = []
    depth = 0
    while len(out) < k and any(len(v) > depth for v in by_label.values()):
        for lab in labels:
            if len(out) < k and len(by_label.get(lab, [])) > depth:
                out.append(by_label[lab][depth])
        depth += 1
    return out


def demo_sets(bootstrapped: list[Demo], labelled: list[Demo], k: int, n_sets: int, seed: int,
              labels: list[str] | None) -> list[tuple[str, list[Demo]]]:
    """``n_sets`` demo sets: bootstrapped demos first (topped up with labelled ones), then labelled-only sets."""
    rng = random.Random(seed)
    out: list[tuple[str, list[Demo]]] = []
    for i in range(n_sets):
        if i % 2 == 0 and bootstrapped:
            chosen = pick_demos(bootstrapped, k, rng, labels)
            have = {d.id for d in chosen}
            chosen += pick_demos([d for d in labelled if d.id not in have], k - len(chosen), rng, labels)
            origin = "demos: bootstrapped"
        else:
            chosen = pick_demos(labelled, k, rng, labels)
            origin = "demos: labelled"
        if chosen and all(chosen != s for _, s in out):
            out.append((origin, chosen))
    return out
