"""least_to_most: decompose the problem into simpler sub-questions, answer them in order (each answer in the
context of the later ones), then answer the original question (Zhou et al., 2023)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps, listed_questions, with_details
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Least-to-most: list simpler sub-questions, answer them in order, then the original question."


class LeastToMostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_subquestions: int = Field(3, ge=1, description="Sub-questions answered at most (one call each).")
    decompose_prompt: str = Field(
        "{task}\n\nDo not answer yet. To solve this, what simpler sub-questions must be answered first? List them "
        "in order, one question per line, the last being the original question.",
        description="The decomposition call; {task} is filled in.")
    decompose_tokens: int = Field(128, ge=1)
    subanswer_tokens: int = Field(96, ge=1, description="Length of each sub-answer.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


class LeastToMost:
    def __init__(self, options: LeastToMostOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        plans = s.ask(s.task_in(o.decompose_prompt), "decompose", o.decompose_tokens)
        subqs = {i: listed_questions(text, o.max_subquestions) for i, text in plans.items()}
        solved: dict[str, list[tuple[str, str]]] = {ex.id: [] for ex in examples}
        for n in range(o.max_subquestions):
            # sub-question n of every example that has one, in one batch; earlier answers are in the prompt
            asks = {i: f"{s.task[i]}\n\n{_transcript(solved[i])}Q: {qs[n]}\nAnswer this sub-question briefly."
                    for i, qs in subqs.items() if len(qs) > n and i not in s.failed}
            for i, a in s.ask(asks, f"subquestion@{n + 1}", o.subanswer_tokens).items():
                solved[i].append((subqs[i][n], a.strip()))
        reasoning = {i: _transcript(qa).strip() for i, qa in solved.items() if i not in s.failed}
        return with_details(s.finish_after(reasoning, trigger=o.answer_trigger), examples,
                            subquestions={i: [{"q": q, "a": a} for q, a in qa] for i, qa in solved.items()})


def _transcript(qa: list[tuple[str, str]]) -> str:
    return "".join(f"Q: {q}\nA: {a}\n" for q, a in qa)


Options = LeastToMostOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> LeastToMost:
    return LeastToMost(parse_options(LeastToMostOptions, spec), ctx)
