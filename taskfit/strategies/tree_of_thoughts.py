"""tree_of_thoughts: breadth-b, depth-d search over partial reasonings. The model proposes next thoughts,
rates each partial reasoning (sure / likely / impossible), the best b are kept; a call budget bounds the
search; the best reasoning is then turned into an answer."""

from __future__ import annotations

import dataclasses
import math

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import answer
from taskfit.backends import GenerateRequest, ScoreRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Breadth-b, depth-d search: propose next thoughts, rate them (sure/likely/impossible), keep the best b."

RATINGS = {"sure": 1.0, "likely": 0.5, "impossible": 0.0}


class TreeOfThoughtsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    breadth: int = Field(2, ge=1, description="States kept after each level (b).")
    depth: int = Field(2, ge=1, description="Reasoning steps (d).")
    proposals: int = Field(3, ge=1, description="Next thoughts sampled per kept state.")
    temperature: float = Field(0.8, gt=0)
    thought_tokens: int = Field(64, ge=1, description="Length limit of one thought.")
    budget: int = Field(40, ge=3, description="Model completions per example at most (proposals + ratings + answer).")
    answer_trigger: str = "Therefore, the answer is"
    seed: int = 0


class TreeOfThoughts:
    def __init__(self, options: TreeOfThoughtsOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def _task(self, ex: Example) -> tuple[str | None, str]:
        parts = self.ctx.parts
        return parts.system and render_row(parts, parts.system, ex, "prompt.system"), user_turn(parts, ex)

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        traces = {ex.id: Trace() for ex in examples}
        frontier: dict[str, list[tuple[str, float]]] = {ex.id: [("", 1.0)] for ex in examples}
        by_id = {ex.id: ex for ex in examples}
        per_level = 2 * o.proposals  # one state costs its proposals plus one rating per proposal
        for level in range(o.depth):
            # expand: each kept state gets `proposals` sampled next thoughts (one request, n samples)
            jobs = [(i, state) for i, states in frontier.items() for state, _ in states
                    if traces[i].n_calls + per_level + 1 <= o.budget]
            if not jobs:
                break
            reqs = []
            for i, state in jobs:
                system, task = self._task(by_id[i])
                prompt = f"{task}\n\nWrite the next step of the reasoning (one or two sentences)."
                prefill = f"Reasoning so far:\n{state}\nNext step:" if state else "Step 1:"
                reqs.append(GenerateRequest(messages(system, [("user", prompt)], prefill), max_tokens=o.thought_tokens,
                                            stop=("\n",), temperature=o.temperature, n=o.proposals,
                                            seed=o.seed + level))
            results = lm.generate(reqs, [traces[i] for i, _ in jobs], step=f"propose@{level + 1}")
            candidates: dict[str, list[str]] = {i: [] for i in frontier}
            for (i, state), res in zip(jobs, results, strict=True):
                for t in res.texts if not res.error else []:
                    if t.strip():
                        candidates[i].append(f"{state}\n{t.strip()}".strip())
            # evaluate: rate every candidate, keep the best `breadth`
            flat = [(i, cand) for i, cands in candidates.items() for cand in dict.fromkeys(cands)]
            values = self._rate(flat, lm, traces, level, by_id)
            for i in frontier:
                rated = sorted(((cand, v) for (j, cand), v in zip(flat, values, strict=True) if j == i),
                               key=lambda cv: -cv[1])
                if rated:
                    frontier[i] = rated[: o.breadth]
        best = {i: states[0][0] for i, states in frontier.items()}

        def answer_prompt(ex: Example) -> tuple:
            system, task = self._task(ex)
            return messages(system, [("user", task)], f"{best[ex.id]}\n{o.answer_trigger}".lstrip())

        answer_ctx = dataclasses.replace(self.ctx, parts=dataclasses.replace(self.ctx.parts, response_prefix=o.answer_trigger))
        preds = answer(examples, answer_prompt, lm, answer_ctx, [traces[ex.id] for ex in examples])
        for p, ex in zip(preds, examples, strict=True):
            p.details["reasoning"] = best[ex.id]
            p.details["frontier"] = [{"state": s, "value": round(v, 3)} for s, v in frontier[ex.id]]
        return preds

    def _rate(self, flat, lm: LM, traces, level: int, by_id) -> list[float]:
        """Expected rating of each partial reasoning: P(sure) + 0.5 P(likely), from label scores when the
        backend can score, else from a generated one-word verdict."""
        if not flat:
            return []
        prompts = []
        for i, cand in flat:
            system, task = self._task(by_id[i])
            q = (f"{task}\n\nPartial reasoning:\n{cand}\n\nIs this reasoning correct and on track to the answer? "
                 "Reply with one word: sure, likely or impossible.")
            prompts.append(messages(system, [("user", q)]))
        step = f"rate@{level + 1}"
        if lm.can_score:
            words = tuple(RATINGS)
            results = lm.score([ScoreRequest(p, words) for p in prompts], [traces[i] for i, _ in flat], step=step)
            values = []
            for r in results:
                if r.error:
                    values.append(0.0)
                    continue
                z = max(r.logprobs)
                probs = [math.exp(lp - z) for lp in r.logprobs]
                values.append(sum(p * RATINGS[w] for p, w in zip(probs, words, strict=True)) / sum(probs))
            return values
        results = lm.generate([GenerateRequest(p, max_tokens=4) for p in prompts], [traces[i] for i, _ in flat], step=step)
        return [next((v for w, v in RATINGS.items() if not r.error and r.texts and w in r.texts[0].lower()), 0.25)
                for r in results]


Options = TreeOfThoughtsOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> TreeOfThoughts:
    return TreeOfThoughts(parse_options(TreeOfThoughtsOptions, spec), ctx)
