"""The flipped interaction: the model asks the user what it needs to know about a task, one question at a
time, then drafts the prompt's instruction from the answers (`taskfit init`, when the user accepts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from taskfit.backends import GenerateRequest, backend_options
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.prompts import messages
from taskfit.scaffold import Proposal, readable
from taskfit.taskfile import ModelSpec

MAX_QUESTIONS = 3  # enough to learn the purpose, the edge cases and the audience; more tires the user
DONE = "INSTRUCTION:"  # how the model says it knows enough, followed by its draft
ASKING = "Question:"  # the reply is prefilled with it: a small model otherwise answers instead of asking
SYSTEM = ("You help write the instruction of a prompt that a language model will follow on every row of a "
          "data set. You do not know the task yet: you ask the user one short question at a time about what "
          f"you need to know. When you know enough, reply with {DONE} followed by the instruction.")
NEXT = "Ask me your next question."


@dataclass
class Interview:
    """The questions the model asked, the user's answers, and the instruction it drafted from them."""

    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    instruction: str = ""


def model_spec(value: str) -> ModelSpec:
    """`--model`: 'bundled', a local model folder or .gguf file, or a .yaml/.json file holding one entry of a
    task file's `models:` list (any backend, e.g. a server or the scripted model)."""
    path = Path(value)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        try:
            spec = ModelSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            backend_options(spec)  # the backend's own keys, checked before any call
        except (ValidationError, yaml.YAMLError, TaskfitError) as e:
            raise TaskfitError(f"not a model entry: {e}", file=str(path)) from None
        return spec
    return ModelSpec(backend="hf", path=value)


def _opening(p: Proposal) -> str:
    """What the model is told about the task before its first question: the fields, labels, two rows."""
    shown = [", ".join(f"{readable(f)}: {str(r.get(f, ''))[:200]}" for f in [*p.inputs, p.output])
             for r in p.rows[:2]]
    labels = f" (one of: {', '.join(p.labels[:20])})" if p.labels else ""
    return (f"Each row has: {', '.join(readable(f) for f in p.inputs)}. The model must give the "
            f"{readable(p.output)}{labels}.\nExample rows:\n" + "\n".join(f"- {s}" for s in shown) +
            f"\nMy draft instruction: {p.instruction}\nAsk me one short question about the task, to learn what "
            "the instruction should say.")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def interview(lm: LM, p: Proposal, ask: Callable[[str], str], max_questions: int = MAX_QUESTIONS) -> Interview:
    """Let the model ask up to ``max_questions`` questions (``ask`` puts one to the user and returns the answer;
    a blank answer ends the interview), then draft the instruction. The draft falls back to the proposal's
    instruction when the model writes none."""
    turns: list[tuple[str, str]] = [("user", _opening(p))]
    result = Interview()

    def reply(prefix: str = "") -> str:
        req = GenerateRequest(messages=messages(SYSTEM, turns, prefix), max_tokens=96, stop=("\n\n",))
        out = lm.generate([req], [Trace()], step="interview")[0]
        if out.error:
            raise TaskfitError(f"the interviewing model failed: {out.error}")
        return out.texts[0] if out.texts else ""

    for _ in range(max_questions):
        text = reply(ASKING)
        if DONE.lower() in text.lower():
            result.instruction = text[text.lower().index(DONE.lower()) + len(DONE):].strip()
            break
        question = _first_line(text)
        if not question:
            break
        answer = ask(question).strip()
        result.questions.append(question)
        result.answers.append(answer)
        turns += [("assistant", f"{ASKING} {question}"), ("user", f"{answer}\n\n{NEXT}" if answer else "Nothing more.")]
        if not answer:
            break
    if not result.instruction:
        turns.append(("user", "Now write the instruction, in one paragraph."))
        result.instruction = reply(DONE).strip()
    result.instruction = _first_line(result.instruction).strip("\"' ") or p.instruction
    return result
