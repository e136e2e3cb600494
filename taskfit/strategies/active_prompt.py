"""active_prompt: choose as demonstrations the train inputs the model is least sure about (Diao et al., 2024).
Each input of a train pool gets several sampled zero-shot chain-of-thought answers; the inputs whose answers
disagree most (distinct answers / samples) are annotated: with the train row's worked solution when the task
names one, else bootstrapped from a sampled reasoning that reached the gold answer, and always ending in the
gold answer. They become the demonstrations of a few-shot chain-of-thought prompt."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import final_answer_text
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.parsing import parse_output
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.cot import clean_rationale
from taskfit.strategies.options import parse_options
from taskfit.strategies.self_consistency import vote_key
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps, charge_setup, demos_apart, reason_with_demos
from taskfit.strategies.zero_shot_cot import ZeroShotCoT, ZeroShotCoTOptions
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Active-Prompt: sample answers on train inputs, make the most-disagreed-on ones the (bootstrapped) CoT demos."


class ActivePromptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(4, ge=1, description="Demonstrations: the k most uncertain pool inputs.")
    pool: int = Field(20, ge=1, description="First train rows whose uncertainty is measured.")
    samples: int = Field(5, ge=2, description="Sampled answers per pool input (completions, one request each).")
    temperature: float = Field(0.7, gt=0)
    rationale_field: str | None = Field(None, description="Train field with a worked solution, used as the annotation.")
    trigger: str = "Let's think step by step."
    demo_tokens: int = Field(160, ge=1, description="Length of a sampled reasoning on a pool input.")
    max_tokens: int = Field(192, ge=1, description="Length of the query's reasoning.")
    answer_trigger: str = ANSWER_TRIGGER
    seed: int = 0
    system: str | None = None


def disagreement(keys: list[str]) -> float:
    """Distinct answers over samples (an unparsable answer counts as one more distinct answer)."""
    return len(set(keys)) / len(keys) if keys else 0.0


class ActivePrompt:
    def __init__(self, options: ActivePromptOptions, ctx: StrategyContext):
        if not ctx.train:
            raise TaskfitError("active_prompt measures uncertainty on the train split, which this task lacks",
                               field="data.train")
        self.options, self.ctx = options, ctx
        self.demos: list[tuple[Example, str]] | None = None
        self.uncertainty: dict[str, float] = {}

    def _key(self, text: str) -> str:
        c = self.ctx.task.config
        value = parse_output(final_answer_text(text), c.parse, c.labels, c.label_aliases).value
        return vote_key(self.ctx.task, value) if value else ""

    def build_demos(self, lm: LM) -> tuple[list[tuple[Example, str]], Trace]:
        o = self.options
        pool = self.ctx.train[: o.pool]
        trace = Trace()
        cot = ZeroShotCoT(ZeroShotCoTOptions(trigger=o.trigger, system=o.system), self.ctx)
        reqs = [GenerateRequest(p, max_tokens=o.demo_tokens, temperature=o.temperature, n=o.samples, seed=o.seed)
                for p in cot.reasoning_prompts(pool)]
        results = lm.generate(reqs, [trace] * len(reqs), step="sample")
        samples = {e.id: ([] if r.error else r.texts) for e, r in zip(pool, results, strict=True)}
        self.uncertainty = {e.id: disagreement([self._key(t) for t in samples[e.id]]) for e in pool}
        # most uncertain first; ties keep train order
        ranked = sorted(pool, key=lambda e: -self.uncertainty[e.id])[: o.k]
        return [(e, self._annotate(e, samples[e.id])) for e in ranked], trace

    def _annotate(self, e: Example, samples: list[str]) -> str:
        o = self.options
        gold = vote_key(self.ctx.task, e.target)
        if o.rationale_field and e.fields.get(o.rationale_field):
            reasoning = clean_rationale(str(e.fields[o.rationale_field]))
        else:
            # a sampled path that reached the gold answer, else none: the demo then shows the answer alone
            right = next((t for t in samples if self._key(t) == gold), "")
            reasoning = right.strip().rsplit(o.answer_trigger, 1)[0].strip() if right else ""
        return f"{o.trigger} {reasoning}\n{o.answer_trigger} {e.target}." if reasoning else f"{o.answer_trigger} {e.target}."

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        if self.demos is None:
            self.demos, setup = self.build_demos(lm)
            charge_setup(s.traces[examples[0].id], [setup], "demo")
        preds = reason_with_demos(s, self.demos, o.trigger, o.max_tokens, o.answer_trigger)
        for ex, p in zip(examples, preds, strict=True):
            p.details["demos"] = [{"id": d.id, "disagreement": round(self.uncertainty.get(d.id, 0.0), 3)}
                                  for d, _ in demos_apart(self.demos, ex, self.ctx)]
        return preds


Options = ActivePromptOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ActivePrompt:
    return ActivePrompt(parse_options(ActivePromptOptions, spec), ctx)
