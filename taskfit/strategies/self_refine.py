"""self_refine: draft, critique, rewrite, for up to n rounds; stop early when the critique finds nothing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import to_prediction
from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.prompts import messages, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Draft -> critique -> rewrite for n rounds; stops early when the critique says NO ISSUES."

NO_ISSUES = "NO ISSUES"


class SelfRefineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(2, ge=1, description="Critique/rewrite rounds at most.")
    max_tokens: int | None = Field(None, description="Draft/rewrite length; default: the task's max_tokens.")
    critique_tokens: int = 96
    critique_prompt: str = Field(
        "Here is a task and a proposed answer.\n\n{task}\n\nProposed answer: {draft}\n\nCheck the proposed answer "
        f"for mistakes. If it is correct and follows the requested format, reply exactly: {NO_ISSUES}. Otherwise "
        "say briefly what is wrong.",
        description="Critique prompt; {task} and {draft} are filled in.")
    rewrite_prompt: str = Field(
        "{task}\n\nA first answer was: {draft}\nA reviewer said: {critique}\n\nWrite the corrected answer only.",
        description="Rewrite prompt; {task}, {draft} and {critique} are filled in.")
    system: str | None = None


class SelfRefine:
    def __init__(self, options: SelfRefineOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o, c, parts = self.options, self.ctx.task.config, self.ctx.parts
        system = o.system or parts.system
        max_tokens = o.max_tokens or c.max_tokens
        stop = tuple(c.stop)
        traces = {ex.id: Trace() for ex in examples}
        task_text = {ex.id: user_turn(parts, ex) for ex in examples}
        sys_for = {ex.id: system and render_row(parts, system, ex, "prompt.system") for ex in examples}

        def call(ids, prompts, step, tokens, stops=stop):
            reqs = [GenerateRequest(messages(sys_for[i], [("user", p)]), max_tokens=tokens, stop=stops) for i, p in zip(ids, prompts, strict=True)]
            res = lm.generate(reqs, [traces[i] for i in ids], step=step)
            return {i: (None if r.error else (r.texts[0] if r.texts else "")) for i, r in zip(ids, res, strict=True)}

        ids = [ex.id for ex in examples]
        drafts = call(ids, [task_text[i] for i in ids], "draft", max_tokens)
        rounds = {i: 0 for i in ids}
        active = [i for i in ids if drafts[i] is not None]
        for _ in range(o.rounds):
            if not active:
                break
            critiques = call(active, [o.critique_prompt.format(task=task_text[i], draft=drafts[i].strip()) for i in active],
                             "critique", o.critique_tokens, ())
            to_fix = [i for i in active if critiques[i] is not None and NO_ISSUES.lower() not in critiques[i].lower()]
            if not to_fix:
                break
            rewrites = call(to_fix, [o.rewrite_prompt.format(task=task_text[i], draft=drafts[i].strip(),
                                                             critique=critiques[i].strip()) for i in to_fix],
                            "rewrite", max_tokens)
            for i in to_fix:
                rounds[i] += 1
                if rewrites[i] is not None and rewrites[i].strip():
                    drafts[i] = rewrites[i]
            active = to_fix
        return [to_prediction(drafts[ex.id], self.ctx, traces[ex.id], details={"rounds": rounds[ex.id]})
                for ex in examples]


Options = SelfRefineOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> SelfRefine:
    return SelfRefine(parse_options(SelfRefineOptions, spec), ctx)
