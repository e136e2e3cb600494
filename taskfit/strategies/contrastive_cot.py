"""contrastive_cot: demonstrations show a correct explanation and a wrong one side by side (Chia et al.,
2023), so the model sees which mistakes to avoid. Correct explanations come from a train field of worked
solutions, or are written by the model for the gold answer; wrong ones shuffle the numbers of the correct
explanation (the paper's automatic construction) or, without numbers, are written by the model for a
wrong label."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from taskfit import selection
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import messages, render_input
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.cot import clean_rationale
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps, charge_setup
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Contrastive CoT: demos pair a correct and a wrong explanation (numbers shuffled or model-written); then answer."

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
WRONG = "Wrong explanation:"


class ContrastiveCoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(2, ge=1, description="Demonstrations (the first k train rows, or `examples`).")
    examples: list[str] | None = Field(None, description="Ids of the train rows to use, in order.")
    rationale_field: str | None = Field(None, description="Train field with a worked solution; else the model "
                                                          "explains the gold answer.")
    demo_tokens: int = Field(128, ge=1, description="Length of a model-written demo explanation.")
    max_tokens: int = Field(192, ge=1, description="Length of the query's explanation.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


def shuffle_numbers(text: str) -> str | None:
    """The text with its numbers rotated one place (a coherent-looking but wrong explanation); None when it has
    fewer than two distinct numbers."""
    nums = _NUMBER.findall(text)
    if len(set(nums)) < 2:
        return None
    rotated = iter(nums[1:] + nums[:1])
    return _NUMBER.sub(lambda m: next(rotated), text)


class ContrastiveCoT:
    def __init__(self, options: ContrastiveCoTOptions, ctx: StrategyContext):
        if not ctx.train:
            raise TaskfitError("contrastive_cot draws demos from the train split, which this task lacks",
                               field="data.train")
        self.options, self.ctx = options, ctx
        self.blocks: dict[tuple[str, ...], str] = {}  # demo ids -> their block, built once

    def _wrong_answer(self, e: Example, others: list[Example]) -> str:
        labels = self.ctx.task.config.labels
        if labels:
            return next((lab for lab in labels if lab != e.target), e.target)
        nums = _NUMBER.findall(e.target)
        if nums:
            return e.target.replace(nums[-1], str(int(float(nums[-1])) + 1), 1)
        return next((o.target for o in others if o.target != e.target), "unknown")

    def demos_for(self, ex: Example) -> list[Example]:
        """The first k train rows (or `examples`), none of them the query itself or a row with its input."""
        o = self.options
        (demos,) = selection.fixed(self.ctx.train, [ex], o.k, self.ctx.seed, ids=o.examples, same=self.ctx.input_key)
        return demos

    def build_demos(self, lm: LM, demos: list[Example]) -> tuple[str, list]:
        """The demonstration block (written into the user turn, as in the paper) and the traces it cost."""
        o, parts = self.options, self.ctx.parts
        helper = Steps(demos, lm, self.ctx, o.system)
        if o.rationale_field:
            good = {d.id: clean_rationale(str(d.fields.get(o.rationale_field, ""))) for d in demos}
        else:
            good = helper.ask({d.id: f"{helper.task[d.id]}\n\nThe correct answer is {d.target}. Explain briefly, step "
                                     "by step, why." for d in demos}, "explain", o.demo_tokens)
        wrong_answer = {d.id: self._wrong_answer(d, demos) for d in demos}
        bad = {d.id: shuffle_numbers(good.get(d.id, "")) for d in demos}
        need = {d.id: f"{helper.task[d.id]}\n\nWrite a short explanation that wrongly concludes that the answer is "
                      f"{wrong_answer[d.id]}." for d in demos if bad[d.id] is None}
        bad.update(helper.ask(need, "explain_wrong", o.demo_tokens) if need else {})
        shots = []
        for d in demos:
            shots.append(f"{render_input(parts, d)}\nExplanation: {good.get(d.id, '').strip()}\n"
                         f"{o.answer_trigger} {d.target}.\n{WRONG} {(bad.get(d.id) or '').strip()}\n"
                         f"{o.answer_trigger} {wrong_answer[d.id]}.")
        return "\n\n".join(shots), list(helper.traces.values())

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        block = {}
        for ex in examples:  # one block for all but a query among its demos (labelling train rows)
            demos = self.demos_for(ex)
            ids = tuple(d.id for d in demos)
            if ids not in self.blocks:
                self.blocks[ids], setup = self.build_demos(lm, demos)
                charge_setup(s.traces[ex.id], setup, "demo")
            block[ex.id] = self.blocks[ids]
        user = {i: f"Examples with a correct and a wrong explanation:\n\n{block[i]}\n\nNow the task.\n\n{t}"
                for i, t in s.task.items()}
        prompts = {i: messages(s.system[i], [("user", u)], "Explanation:") for i, u in user.items()}
        reasoning = {i: t[0].split(WRONG)[0].strip()
                     for i, t in s.generate(prompts, "reason", o.max_tokens, stop=(WRONG,)).items()}
        return s.finish_after(reasoning, trigger=o.answer_trigger)


Options = ContrastiveCoTOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ContrastiveCoT:
    return ContrastiveCoT(parse_options(ContrastiveCoTOptions, spec), ctx)
