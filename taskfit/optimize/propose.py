"""Instruction proposals by meta-prompting (APE / OPRO): show a model the task, a few solved examples and the
instructions tried so far with their scores, and ask for a better one."""

from __future__ import annotations

import re

from taskfit.backends import GenerateRequest
from taskfit.dataset import Example
from taskfit.lm import Trace
from taskfit.optimize.budget import MeteredLM
from taskfit.prompts import PromptParts, render_input

MAX_WORDS = 60  # longer replies are rambling, not instructions
_LEAD_IN = re.compile(r"^(?:here is |here's )?(?:an? )?(?:new |improved |better )?instruction\s*\d*\s*[:\-]\s*", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TEMPLATE = re.compile(r"\{[{%#]")  # an instruction is a Jinja template: model text must not be able to run as one


def meta_prompt(description: str, parts: PromptParts, examples: list[Example], scored: list[tuple[str, float]]) -> str:
    """The OPRO-style prompt: task, examples, earlier instructions worst to best with scores, then the request."""
    shots = "\n\n".join(f"Input: {render_input(parts, ex)}\nCorrect output: {ex.target}" for ex in examples)
    history = "\n\n".join(f"Instruction: {text}\nScore: {score:.2f}" for text, score in sorted(scored, key=lambda x: x[1]))
    return (
        "Your job is to write the instruction of a prompt for a language model.\n\n"
        f"Task: {description}\n\n"
        f"Examples of inputs with the correct output:\n\n{shots}\n\n"
        "Instructions tried so far, each with the fraction of sample inputs it got right (higher is better):\n\n"
        f"{history}\n\n"
        "Write a new instruction, different from all of the above, that will get a higher score. "
        "Reply with the instruction only, in one or two sentences."
    )


def clean_instruction(text: str) -> str | None:
    """The instruction in a proposal reply, or None when the reply holds no usable one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    text = _LEAD_IN.sub("", lines[0] if lines else "").strip().strip("\"'`* ").strip()
    text = " ".join(text.split())
    sentences = _SENTENCE.split(text)
    if len(sentences) > 2:  # small models run on; the first two sentences hold the instruction
        text = " ".join(sentences[:2])
    words = len(text.split())
    if words < 3 or words > MAX_WORDS or _TEMPLATE.search(text):
        return None
    return text


def propose(lm: MeteredLM, description: str, parts: PromptParts, examples: list[Example],
            scored: list[tuple[str, float]], n: int, seed: int, temperature: float = 1.0,
            max_tokens: int = 64) -> list[str]:
    """Up to ``n`` new instructions (one sampled reply each; unusable and repeated replies are dropped)."""
    if n <= 0:
        return []
    prompt = meta_prompt(description, parts, examples, scored)
    # one request for n samples: a local model decodes them as one batch (it counts as n calls)
    # the reply is prefilled with "Instruction:" so that even a small model answers with one
    req = GenerateRequest(({"role": "user", "content": prompt}, {"role": "assistant", "content": "Instruction:"}),
                          max_tokens=max_tokens, stop=("\n\n",), temperature=temperature, n=n, seed=seed)
    (res,) = lm.generate([req], [Trace()], step="propose")
    seen = {text.casefold() for text, _ in scored}
    out = []
    for reply in [] if res.error else res.texts:
        text = clean_instruction(reply)
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out
