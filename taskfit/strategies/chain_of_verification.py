"""chain_of_verification: draft an answer, plan verification questions about it, answer each question
independently of the draft (so its errors are not copied), then give the final answer in the light of the
verifications (Dhuliawala et al., 2023, the factored variant)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import messages, render_input
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import Steps, listed_questions, with_details
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Chain-of-verification: draft, plan verification questions, answer them independently, then a verified answer."


class ChainOfVerificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    questions: int = Field(3, ge=1, description="Verification questions answered at most (one call each).")
    draft_tokens: int = Field(160, ge=1, description="Length of the draft answer (with its reasoning).")
    plan_prompt: str = Field(
        "{task}\n\nDraft answer: {draft}\n\nWrite up to {n} short questions that would check the facts or steps "
        "of this draft, one per line.", description="The planning call; {task}, {draft} and {n} are filled in.")
    plan_tokens: int = Field(128, ge=1)
    verify_prompt: str = Field("{input}\n\nAnswer briefly: {question}",
                               description="One verification call; {input} (the row's input) and {question}; "
                                           "the draft is left out on purpose.")
    verify_tokens: int = Field(64, ge=1)
    final_prompt: str = Field(
        "{task}\n\nA draft answer was: {draft}\n\nVerification questions and their answers:\n{checks}\n\n"
        "Correct the draft where the verification contradicts it, and give the final answer.",
        description="The final answer's user turn; {task}, {draft} and {checks} are filled in.")
    system: str | None = None


class ChainOfVerification:
    def __init__(self, options: ChainOfVerificationOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o, parts = self.options, self.ctx.parts
        s = Steps(examples, lm, self.ctx, o.system)
        drafts = {i: d.strip() for i, d in s.ask(s.task, "draft", o.draft_tokens).items()}
        plans = s.ask({i: o.plan_prompt.format(task=s.task[i], draft=d, n=o.questions) for i, d in drafts.items()},
                      "plan", o.plan_tokens)
        questions = {i: listed_questions(text, o.questions) for i, text in plans.items()}
        checks: dict[str, list[tuple[str, str]]] = {ex.id: [] for ex in examples}
        by_id = {ex.id: ex for ex in examples}
        # every verification question of the batch at once: they are independent of each other and of the draft
        jobs = [(i, q) for i, qs in questions.items() for q in qs]
        verify_traces = [s.traces[i] for i, _ in jobs]
        reqs = [GenerateRequest(messages(s.system[i], [("user", o.verify_prompt.format(
            input=render_input(parts, by_id[i]), question=q))]), max_tokens=o.verify_tokens) for i, q in jobs]
        results = lm.generate(reqs, verify_traces, step="verify") if reqs else []
        for (i, q), r in zip(jobs, results, strict=True):
            # a failed verification is left out; the draft still stands
            if not r.error:
                checks[i].append((q, (r.texts[0] if r.texts else "").strip()))
        user = {i: o.final_prompt.format(task=s.task[i], draft=drafts[i],
                                         checks="\n".join(f"Q: {q}\nA: {a}" for q, a in checks[i]) or "(none)")
                for i in drafts}
        return with_details(s.finish_user(user), examples, draft=drafts,
                            verification={i: [{"q": q, "a": a} for q, a in qa] for i, qa in checks.items()})


Options = ChainOfVerificationOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> ChainOfVerification:
    return ChainOfVerification(parse_options(ChainOfVerificationOptions, spec), ctx)
