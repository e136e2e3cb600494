"""self_consistency: k sampled reasoning paths, majority vote over their answers."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskfit.answering import final_answer_text
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.parsing import answer_key, parse_output
from taskfit.strategies import Prediction, StrategyContext, strategies
from taskfit.strategies.options import check_base_options, parse_options
from taskfit.taskfile import StrategySpec, Task

DESCRIPTION = "k sampled chain-of-thought paths (temperature > 0), majority vote; the vote distribution is stored."


def vote_key(task: Task, answer: str) -> str:
    """What counts as the same answer: the number for numeric tasks ("7 apples" = "7"), else normalised text."""
    if task.config.metrics[0].name == "numeric":
        from taskfit.metrics.numeric import extract_number

        value = extract_number(answer)
        return "" if value is None else f"{value:g}"
    return answer_key(answer)


class SelfConsistencyOptions(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest configures the reasoning strategy
    k: int = Field(5, ge=1, description="Sampled reasoning paths per example (one completion each).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    base: Literal["cot", "zero_shot_cot"] = Field("zero_shot_cot", description="Where the reasoning prompt comes from.")
    seed: int = 0

    @model_validator(mode="after")
    def _base_takes_the_rest(self) -> SelfConsistencyOptions:
        check_base_options(self.base, self.model_extra)
        return self


class SelfConsistency:
    def __init__(self, options: SelfConsistencyOptions, base, max_tokens: int, ctx: StrategyContext):
        self.options, self.base, self.max_tokens, self.ctx = options, base, max_tokens, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o, c = self.options, self.ctx.task.config
        traces = [Trace() for _ in examples]
        reqs = [GenerateRequest(p, max_tokens=self.max_tokens, temperature=o.temperature, n=o.k, seed=o.seed)
                for p in self.base.reasoning_prompts(examples)]
        results = lm.generate(reqs, traces, step="sample")
        preds = []
        for res, trace in zip(results, traces, strict=True):
            if res.error or not res.texts:
                preds.append(Prediction(output="", answer=None, trace=trace, failed=bool(res.error), parse_failed=True))
                continue
            answers = [parse_output(final_answer_text(t), c.parse, c.labels, c.label_aliases).value for t in res.texts]
            key = functools.partial(vote_key, self.ctx.task)
            # vote on the normalised answer so "18", "18." and "$18" count together; report the first spelling
            votes = Counter(key(a) for a in answers if a and key(a))
            if not votes:
                preds.append(Prediction(output=res.texts[0], answer=None, trace=trace, parse_failed=True,
                                        details={"votes": {}, "samples": res.texts}))
                continue
            top = max(votes.values())
            winner_key = next(key(a) for a in answers if a and key(a) and votes[key(a)] == top)
            winner = next(a for a in answers if a and key(a) == winner_key)
            preds.append(Prediction(output=res.texts[answers.index(winner)], answer=winner, trace=trace,
                                    details={"votes": dict(votes.most_common()), "agreement": top / len(res.texts),
                                             "samples": res.texts}))
        return preds


Options = SelfConsistencyOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> SelfConsistency:
    o = parse_options(SelfConsistencyOptions, spec)
    inner = StrategySpec(name=o.base, id=spec.label(), **(o.model_extra or {}))
    base = strategies.get(o.base)(inner, ctx)
    return SelfConsistency(o, base, base.options.max_tokens, ctx)
