"""self_ask: the model asks itself follow-up questions and answers each before the final answer (Press et
al., 2023). The reply stops at "Intermediate answer:"; a separate call answers the follow-up, the answer is
appended and the model continues, until it writes "So the final answer is" or runs out of follow-ups."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import LM
from taskfit.prompts import messages
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import Steps, with_details
from taskfit.taskfile import StrategySpec

DESCRIPTION = "Self-ask: the model poses follow-up questions, each answered by a separate call, then the final answer."

FOLLOW_UP, INTERMEDIATE, FINAL = "Follow up:", "Intermediate answer:", "So the final answer is"

DEMO = (
    "Question: Who lived longer, Muhammad Ali or Alan Turing?\n"
    "Are follow up questions needed here: Yes.\n"
    "Follow up: How old was Muhammad Ali when he died?\n"
    "Intermediate answer: Muhammad Ali was 74 years old when he died.\n"
    "Follow up: How old was Alan Turing when he died?\n"
    "Intermediate answer: Alan Turing was 41 years old when he died.\n"
    "So the final answer is: Muhammad Ali"
)


class SelfAskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_followups: int = Field(3, ge=1, description="Follow-up questions answered at most (two calls each).")
    demo: str = Field(DEMO, description="The worked example that shows the format.")
    step_tokens: int = Field(96, ge=1, description="Length of one continuation of the self-ask transcript.")
    answer_tokens: int = Field(64, ge=1, description="Length of one intermediate answer.")
    system: str | None = None


class SelfAsk:
    def __init__(self, options: SelfAskOptions, ctx: StrategyContext):
        self.options, self.ctx = options, ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        user = {i: f"Answer in the format of this example.\n\n{o.demo}\n\n{t}" for i, t in s.task.items()}
        transcript = {ex.id: "Are follow up questions needed here:" for ex in examples}
        followups: dict[str, list[dict[str, str]]] = {ex.id: [] for ex in examples}
        active = [ex.id for ex in examples]
        for n in range(o.max_followups + 1):
            # continue each transcript up to the point where it needs an intermediate answer
            prompts = {i: messages(s.system[i], [("user", user[i])], transcript[i]) for i in active}
            step = {i: t[0] for i, t in s.generate(prompts, f"ask@{n + 1}", o.step_tokens, stop=(INTERMEDIATE,)).items()}
            asking = {}
            for i, text in step.items():
                done = text.lower().find(FINAL.lower())
                if done >= 0:  # the answer step restates the final answer, scored or parsed like any answer
                    transcript[i] += text[:done].rstrip()
                    continue
                transcript[i] += text.rstrip()
                question = _last_followup(text)
                if question is None or n == o.max_followups:
                    continue
                asking[i] = question
            answers = s.ask({i: f"Answer briefly: {q}" for i, q in asking.items()}, f"follow_up@{n + 1}", o.answer_tokens)
            for i, a in answers.items():
                a = a.strip().splitlines()[0] if a.strip() else ""
                followups[i].append({"q": asking[i], "a": a})
                transcript[i] += f"\n{INTERMEDIATE} {a}\n"
            active = list(answers)
            if not active:
                break
        preds = s.finish_after({i: t for i, t in transcript.items() if i not in s.failed}, user, f"{FINAL}:")
        return with_details(preds, examples, follow_ups=followups)


    def dry_reply(self, request: GenerateRequest) -> str | None:
        """A cost estimate's stand-in reply (taskfit.estimate): a transcript asks as many follow-ups as the
        worked example shows (capped by ``max_followups``), then states its answer. A model imitates the demo's
        format, so the demo's count is the expectation; counting the limit would overstate the cost."""
        if request.stop != (INTERMEDIATE,):  # not a continuation of the transcript
            return None
        expected = min(self.options.demo.count(FOLLOW_UP), self.options.max_followups)
        if request.messages[-1]["content"].count(INTERMEDIATE) >= expected:
            return f" No.\n{FINAL}: so"
        tag = hashlib.sha256(json.dumps(list(request.messages)).encode()).hexdigest()[:6]  # rows ask apart
        return f" Yes.\n{FOLLOW_UP} Which {tag}?\n"


def _last_followup(text: str) -> str | None:
    if FOLLOW_UP not in text:
        return None
    q = text.rsplit(FOLLOW_UP, 1)[1].strip().splitlines()
    return q[0].strip() if q and q[0].strip() else None


Options = SelfAskOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> SelfAsk:
    return SelfAsk(parse_options(SelfAskOptions, spec), ctx)
