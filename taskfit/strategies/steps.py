"""Building blocks of multi-step strategies: the task as a user turn, a batched generation step over the
examples still alive, and the final answer step (label scoring or a short generated answer) after reasoning."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from taskfit import selection
from taskfit.answering import answer, to_prediction
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext

ANSWER_TRIGGER = "Therefore, the answer is"


class Steps:
    """The traces and per-example text of one batch; each step generates for the examples whose earlier
    steps succeeded (a failed call ends that example's pipeline and fails its prediction)."""

    def __init__(self, examples: list[Example], lm: LM, ctx: StrategyContext, system: str | None = None):
        self.examples, self.lm, self.ctx = examples, lm, ctx
        self.traces = {ex.id: Trace() for ex in examples}
        self.failed: set[str] = set()
        system = system or ctx.parts.system
        self.system = {ex.id: system and render_row(ctx.parts, system, ex, "prompt.system") for ex in examples}
        self.task = {ex.id: user_turn(ctx.parts, ex) for ex in examples}

    def task_in(self, template: str) -> dict[str, str]:
        """Each example's task filled into ``template``'s ``{task}``, by id."""
        return {i: template.format(task=t) for i, t in self.task.items()}

    def task_then(self, text: str) -> dict[str, str]:
        """Each example's task followed by ``text`` (a paragraph of its own), by id."""
        return {i: f"{t}\n\n{text}" for i, t in self.task.items()}

    @property
    def alive(self) -> list[Example]:
        return [ex for ex in self.examples if ex.id not in self.failed]

    def generate(self, prompts: dict[str, tuple], step: str, max_tokens: int, stop: tuple[str, ...] = (),
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> dict[str, list[str]]:
        """One request per example id in ``prompts`` (chat messages); returns the sampled texts by id."""
        ids = [i for i in prompts if i not in self.failed]
        reqs = [GenerateRequest(prompts[i], max_tokens=max_tokens, stop=stop, temperature=temperature, n=n, seed=seed)
                for i in ids]
        results = self.lm.generate(reqs, [self.traces[i] for i in ids], step=step) if reqs else []
        out = {}
        for i, r in zip(ids, results, strict=True):
            if r.error:
                self.failed.add(i)
            else:
                out[i] = r.texts or [""]
        return out

    def ask(self, texts: dict[str, str], step: str, max_tokens: int, stop: tuple[str, ...] = (),
            prefill: str = "") -> dict[str, str]:
        """A user message per example (with the row's system message); returns the first reply by id."""
        prompts = {i: messages(self.system[i], [("user", t)], prefill) for i, t in texts.items()}
        return {i: t[0] for i, t in self.generate(prompts, step, max_tokens, stop).items()}

    def finish(self, prompt, response_prefix: str | None = None) -> list[Prediction]:
        """The answer step: ``prompt(example)`` gives its messages; labels are scored (or a short answer is
        generated and parsed) as the continuation of ``response_prefix`` (default: the task's)."""
        ctx = self.ctx
        if response_prefix is not None:
            ctx = dataclasses.replace(ctx, parts=dataclasses.replace(ctx.parts, response_prefix=response_prefix))
        preds = answer(self.examples, prompt, self.lm, ctx, [self.traces[ex.id] for ex in self.examples])
        for p, ex in zip(preds, self.examples, strict=True):
            if ex.id in self.failed:
                p.failed, p.answer = True, None
        return preds

    def finish_user(self, user: dict[str, str]) -> list[Prediction]:
        """Answer directly from a rewritten user turn per example, like a single-call strategy."""
        return self.finish(lambda ex: messages(self.system[ex.id], [("user", user.get(ex.id, self.task[ex.id]))],
                                               self.ctx.parts.response_prefix))

    def finish_after(self, reasoning: dict[str, str], user: dict[str, str] | None = None,
                     trigger: str = ANSWER_TRIGGER) -> list[Prediction]:
        """Answer after a reasoning reply: the assistant's turn holds the reasoning and continues with
        ``trigger``; ``user`` overrides the user turn that the reasoning answered."""
        user = user or self.task

        def prompt(ex: Example) -> tuple:
            return messages(self.system[ex.id], [("user", user[ex.id])],
                            f"{reasoning.get(ex.id, '').strip()}\n{trigger}".lstrip())

        preds = self.finish(prompt, trigger)
        for p, ex in zip(preds, self.examples, strict=True):
            p.details["reasoning"] = reasoning.get(ex.id, "")
        return preds


    def reason_then_answer(self, user: dict[str, str], step: str, max_tokens: int, answer_trigger: str,
                           prefill: str = "") -> list[Prediction]:
        """One reasoning reply to ``user`` (opening with ``prefill``), then the answer step after it."""
        reasoning = self.ask(user, step, max_tokens, prefill=prefill)
        return self.finish_after({i: f"{prefill}{r}" for i, r in reasoning.items()}, user, answer_trigger)


def reasoned_replies(prompts: list[tuple], max_tokens: int, lm: LM, ctx: StrategyContext) -> list[Prediction]:
    """One call per prompt, whose reply reasons and ends with the answer (read off its end)."""
    traces = [Trace() for _ in prompts]
    results = lm.generate([GenerateRequest(p, max_tokens=max_tokens) for p in prompts], traces, step="reason")
    return [to_prediction(None if r.error else (r.texts[0] if r.texts else ""), ctx, t, reasoning=True)
            for r, t in zip(results, traces, strict=True)]


def with_details(preds: list[Prediction], examples: list[Example], **by_id: dict[str, Any]) -> list[Prediction]:
    """``preds`` with, for each keyword, their example's value (by id; "" when it has none) in their details."""
    for p, ex in zip(preds, examples, strict=True):
        for key, values in by_id.items():
            p.details[key] = values.get(ex.id, "")
    return preds


_ITEM = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|Q\d*[.:)]?|Sub-?question\s*\d*[.:]?)\s*", re.I)


def listed_questions(text: str, limit: int) -> list[str]:
    """The questions a model listed (one per line, numbered or bulleted), at most ``limit``."""
    out = []
    for line in text.splitlines():
        q = _ITEM.sub("", line).strip()
        if q.endswith("?") and q not in out:
            out.append(q)
    return out[:limit]


def charge_setup(trace: Trace, setup: list[Trace], step: str = "setup") -> None:
    """Record calls made once for the whole run (building demos) in ``trace`` (the batch's first example), so
    totals and per-query means over a run count them exactly once."""
    for t in setup:
        trace.calls.extend({**c, "step": f"{step}:{c['step']}"} for c in t.calls)


def demo_chat(parts, demos: list[tuple[Example, str]], ex: Example) -> list[tuple[str, str]]:
    """Chat turns: each demo's task and worked reply, then the example's task (the instruction goes with the
    first turn only)."""
    turns: list[tuple[str, str]] = []
    for n, (d, reply) in enumerate(demos):
        turns += [("user", user_turn(parts, d, with_instruction=n == 0)), ("assistant", reply)]
    turns.append(("user", user_turn(parts, ex, with_instruction=not demos)))
    return turns


def reason_with_demos(s: Steps, demos: list[tuple[Example, str]], trigger: str, max_tokens: int,
                      answer_trigger: str = ANSWER_TRIGGER) -> list[Prediction]:
    """Few-shot chain-of-thought over worked demos: reason after ``trigger``, then the answer step."""
    prompts = {ex.id: messages(s.system[ex.id], demo_chat(s.ctx.parts, demos_apart(demos, ex, s.ctx), ex), trigger)
               for ex in s.examples}
    reasoning = {i: f"{trigger} {t[0].strip()}" for i, t in s.generate(prompts, "reason", max_tokens).items()}
    return s.finish_after(reasoning, trigger=answer_trigger)


def demos_apart(demos: list[tuple[Example, str]], ex: Example, ctx: StrategyContext) -> list[tuple[Example, str]]:
    """Worked demos less the query itself and rows with its input (demos built once, from the train split,
    may hold the very row a teacher labels); a query among them gets one demo fewer."""
    kept = {id(d) for d in selection.apart([d for d, _ in demos], ex, ctx.input_key)}
    return [(d, reply) for d, reply in demos if id(d) in kept]
