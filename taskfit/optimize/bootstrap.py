"""Bootstrapped demonstrations: run a program on train rows and keep the traces it got right (DSPy's
BootstrapFewShot idea), reasoning included, so demos show answers the model can actually produce."""

from __future__ import annotations

import re
from collections.abc import Callable

from taskfit.dataset import Example
from taskfit.optimize.candidates import Demo, to_demo
from taskfit.strategies import Prediction

_ANSWER_LINE = re.compile(r"(?:####|the (?:final )?answer is|answer\s*:)", re.I)


def rationale(output: str) -> str:
    """The reasoning of a chain-of-thought reply without its closing answer statement."""
    markers = list(_ANSWER_LINE.finditer(output))
    if markers:
        return output[:markers[-1].start()].strip()
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:-1]).strip()


def keep_correct(rows: list[Example], preds: list[Prediction], score: Callable[[str, Example], float],
                 inputs: list[str], with_rationale: bool) -> list[Demo]:
    """Demos from the rows whose prediction scored full marks (and, for reasoning, left some reasoning)."""
    out = []
    for ex, p in zip(rows, preds, strict=True):
        if p.answer is None or score(p.answer, ex) < 1.0:
            continue
        why = rationale(p.output) if with_rationale else None
        if with_rationale and not why:
            continue
        out.append(to_demo(ex, inputs, "bootstrapped", why))
    return out
