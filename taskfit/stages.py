"""How long each stage of a study took: wall time and this process's CPU time (all its threads), measured
around the stage, so a reader can tell where a run's time went and whether the machine was busy (CPU time
well under wall time x threads means the process waited)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageTime:
    name: str
    wall_s: float
    cpu_s: float  # time.process_time(): user + system time of every thread of this process


@dataclass
class Stages:
    """Stage times in the order the stages ran; ``with stages("tuning"): ...`` adds one."""

    times: list[StageTime] = field(default_factory=list)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.times.append(StageTime(name, time.perf_counter() - wall, time.process_time() - cpu))

    def text(self) -> str:
        """``load 3 s (cpu 4 s), tuning 1 min 35 s (cpu 3 min 02 s), ...``: a stage entered twice counts once
        with both times added; stages under 0.5 s are left out."""
        total: dict[str, list[float]] = {}
        for t in self.times:
            wall_cpu = total.setdefault(t.name, [0.0, 0.0])
            wall_cpu[0] += t.wall_s
            wall_cpu[1] += t.cpu_s
        return ", ".join(f"{name} {duration(w)} (cpu {duration(c)})" for name, (w, c) in total.items() if w >= 0.5)


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
