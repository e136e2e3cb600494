"""program_of_thought: the model writes a short Python program for the answer; a sandbox runs it
(Program of Thoughts, Chen et al., 2022; PAL, Gao et al., 2022)."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict, Field

from taskfit import selection
from taskfit.answering import to_prediction
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.prompts import messages, render_input, render_row
from taskfit.sandbox import SandboxResult, extract_code, run_program
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "The model writes a Python program that computes the answer; a sandbox runs it (no imports, math only)."

REQUEST = ("Write a short Python program that computes the answer and stores it in a variable named `answer`. "
           "Do not import anything; the `math` module is available.")
FENCE = "```python\n"


class ProgramOfThoughtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(1, ge=0, description="Demonstrations: the first k train rows, each with a worked program.")
    program_field: str | None = Field(
        None, description="Train field holding a worked program for the demo; default: `answer = <target>`.")
    max_tokens: int = Field(256, ge=1, description="Generation length limit for the program.")
    timeout_s: float = Field(2.0, gt=0, description="Wall-clock limit for running one program.")
    memory_mb: int = Field(
        256, ge=32, description="Address-space limit for running one program (interpreter included).")
    prefill: bool = Field(
        True, description="Start the reply with a ```python fence, so even small models answer in code.")
    system: str | None = Field(None, description="Overrides prompt.system for this row.")


class ProgramOfThought:
    def __init__(self, options: ProgramOfThoughtOptions, ctx: StrategyContext):
        if options.k and not ctx.train:
            raise TaskfitError("program_of_thought needs a train split for its demonstrations (or set k: 0)",
                               field="data.train")
        self.options, self.ctx = options, ctx

    def demos_for(self, ex: Example) -> list[Example]:
        """The first k train rows, none of them the query itself or a row with its input."""
        if not self.options.k:
            return []
        (demos,) = selection.fixed(self.ctx.train, [ex], self.options.k, self.ctx.seed, same=self.ctx.input_key)
        return demos

    def user_turn(self, ex: Example, *, with_instruction: bool) -> str:
        parts = self.ctx.parts
        instruction = render_row(parts, parts.instruction, ex, "prompt.instruction") if with_instruction else ""
        return "\n\n".join(x for x in [instruction, render_input(parts, ex), REQUEST] if x)

    def demo_program(self, demo: Example) -> str:
        field = self.options.program_field
        if field and demo.fields.get(field):
            return str(demo.fields[field]).strip()
        return f"answer = {_literal(demo.target)}"

    def prompt(self, ex: Example) -> tuple:
        system = self.options.system or self.ctx.parts.system
        turns: list[tuple[str, str]] = []
        demos = self.demos_for(ex)
        for i, d in enumerate(demos):
            # the instruction goes with the first turn only, so every prompt shares the same prefix
            turns += [("user", self.user_turn(d, with_instruction=i == 0)),
                      ("assistant", f"{FENCE}{self.demo_program(d)}\n```")]
        turns.append(("user", self.user_turn(ex, with_instruction=not demos)))
        return messages(system and render_row(self.ctx.parts, system, ex, "prompt.system"), turns, FENCE if self.options.prefill else "")

    def program(self, reply: str) -> str:
        # a prefilled reply continues the open fence; a reply that opens its own fence is read as it is
        return extract_code(reply if not self.options.prefill or "```" in reply else FENCE + reply)

    def run(self, program: str) -> SandboxResult:
        return run_program(program, timeout_s=self.options.timeout_s, memory_mb=self.options.memory_mb)

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        traces = [Trace() for _ in examples]
        # a program spans lines and blank lines, so the task's stop sequences (often "\n") would cut it short;
        # with the fence prefilled, the closing fence ends it
        stop = ("```",) if o.prefill else ()
        results = lm.generate([GenerateRequest(self.prompt(ex), max_tokens=o.max_tokens, stop=stop)
                               for ex in examples], traces)
        replies = {i: r.texts[0] if r.texts else "" for i, r in enumerate(results) if not r.error}
        programs = {i: self.program(reply) for i, reply in replies.items()}
        # each program runs in its own process: a thread per program overlaps their start-up and waiting
        with ThreadPoolExecutor(max_workers=max(1, min(len(programs), os.cpu_count() or 1))) as pool:
            runs = dict(zip(programs, pool.map(self.run, programs.values()), strict=True))
        return [self.prediction(replies[i], programs[i], runs[i], trace) if i in runs
                else to_prediction(None, self.ctx, trace) for i, trace in enumerate(traces)]

    def prediction(self, reply: str, program: str, run: SandboxResult, trace: Trace) -> Prediction:
        trace.calls.append({
            "step": "execute", "kind": "tool", "messages": [],
            "params": {"n": 0},  # a program run, not a model call
            "output": run.error or run.value, "tokens_in": 0, "tokens_out": 0, "latency_ms": run.elapsed_ms,
            "cached": False, "error": None,
        })
        details = {"program": program, "program_result": run.value}
        if run.error:
            details["sandbox_error"] = run.error
            return Prediction(output=reply, answer=None, trace=trace, parse_failed=True, details=details)
        pred = to_prediction(run.value, self.ctx, trace, details=details)
        pred.output = reply  # what the model said; the program's result is in details
        return pred


def _literal(target: str) -> str:
    """``target`` as a Python literal: a number stays a number, anything else becomes a string."""
    try:
        return str(int(target))
    except ValueError:
        pass
    try:
        value = float(target)
    except ValueError:
        return repr(target)
    return repr(value) if math.isfinite(value) else repr(target)


Options = ProgramOfThoughtOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ProgramOfThought:
    return ProgramOfThought(parse_options(ProgramOfThoughtOptions, spec), ctx)
