"""The last step of every single-call strategy: get an answer for a prompt by label scoring or generation.

With a label set and a backend that can score, the answer is the label whose text is most likely as the
start of the assistant's reply (one scored continuation per label spelling, as in lm-evaluation-harness
multiple choice): no parsing, so no parse failures. Otherwise the model generates and the reply is parsed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

from taskfit.backends import GenerateRequest, Message, ScoreRequest
from taskfit.dataset import Example
from taskfit.lm import LM, Trace
from taskfit.parsing import parse_output
from taskfit.strategies import Prediction, StrategyContext

PromptFn = Callable[[Example], tuple[Message, ...]]
CONTENT_FREE = "N/A"  # contextual calibration's content-free input (Zhao et al., 2021)


def label_spellings(label: str, aliases: list[str]) -> list[str]:
    """The label as written, capitalised when it is a plain word ("positive" -> "Positive"), and its aliases:
    the model may prefer any of them. Identifier-like labels ("card_arrival") are not capitalised."""
    out = []
    plain = label.replace(" ", "").isalpha()
    for s in [label, *([label[:1].upper() + label[1:]] if plain else []), *aliases]:
        if s and s not in out:
            out.append(s)
    return out


def answer_text(target: str, response_prefix: str) -> str:
    """How a demo's answer is written in an assistant turn that starts with ``response_prefix``."""
    if not response_prefix:
        return target
    return response_prefix + ("" if response_prefix[-1:].isspace() else " ") + target


def answer(examples: list[Example], prompt: PromptFn, lm: LM, ctx: StrategyContext,
           traces: list[Trace] | None = None) -> list[Prediction]:
    traces = traces or [Trace() for _ in examples]
    prompts = [prompt(ex) for ex in examples]
    c = ctx.task.config
    if ctx.mode == "score" and c.labels and lm.can_score:
        return _by_label_score(examples, prompts, prompt, lm, ctx, traces)
    results = lm.generate([GenerateRequest(p, max_tokens=c.max_tokens, stop=tuple(c.stop)) for p in prompts], traces)
    preds = []
    for res, trace in zip(results, traces, strict=True):
        if res.error:
            preds.append(Prediction(output="", answer=None, trace=trace, failed=True))
            continue
        text = res.texts[0] if res.texts else ""
        parsed = parse_output(text, c.parse, c.labels, c.label_aliases)
        preds.append(Prediction(output=text, answer=parsed.value, trace=trace, parse_failed=parsed.failed))
    return preds


def label_continuations(c, response_prefix: str) -> list[tuple[str, str]]:
    """(label, continuation) for every spelling of every label, as scored after ``response_prefix``."""
    lead = " " if response_prefix and not response_prefix[-1:].isspace() else ""
    return [(lab, lead + s) for lab in c.labels for s in label_spellings(lab, c.label_aliases.get(lab, []))]


def label_groups(c, response_prefix: str) -> dict[str, list[str]]:
    """Each label's scored continuations."""
    groups: dict[str, list[str]] = {}
    for lab, cont in label_continuations(c, response_prefix):
        groups.setdefault(lab, []).append(cont)
    return groups


def _by_label_score(examples, prompts, prompt: PromptFn, lm: LM, ctx: StrategyContext, traces) -> list[Prediction]:
    c = ctx.task.config
    spellings = label_continuations(c, ctx.parts.response_prefix)
    conts = tuple(s for _, s in spellings)
    results = lm.score([ScoreRequest(p, conts) for p in prompts], traces)
    offsets: list[dict[str, float] | None] = [None] * len(examples)
    if c.calibrate and not getattr(lm.backend, "scores_labels", False):  # a trained head needs no calibration
        blank = [dataclasses.replace(ex, fields={**ex.fields, **{f: CONTENT_FREE for f in c.inputs}}) for ex in examples]
        cf_results = lm.score([ScoreRequest(prompt(b), conts) for b in blank], traces, step="calibration")
        offsets = [None if r.error else _per_label(spellings, r.logprobs) for r in cf_results]
    preds = []
    for res, offset, trace in zip(results, offsets, traces, strict=True):
        if res.error:
            preds.append(Prediction(output="", answer=None, trace=trace, failed=True))
            continue
        per_label = _per_label(spellings, res.logprobs)
        if offset:
            per_label = {lab: lp - offset[lab] for lab, lp in per_label.items()}
        best = max(per_label, key=per_label.get)
        preds.append(Prediction(output=best, answer=best, trace=trace,
                                details={"label_logprobs": {k: round(v, 4) for k, v in per_label.items()},
                                         "calibrated": bool(offset)}))
    return preds


def _per_label(spellings: list[tuple[str, str]], logprobs: list[float]) -> dict[str, float]:
    per_label: dict[str, float] = {}
    for (lab, _), lp in zip(spellings, logprobs, strict=True):
        prev = per_label.get(lab)
        per_label[lab] = lp if prev is None else _logaddexp(prev, lp)
    return per_label


def _logaddexp(a: float, b: float) -> float:
    m = max(a, b)
    if m == -math.inf:  # neither spelling possible (a constrained choice picked another label)
        return m
    return m + math.log(math.exp(a - m) + math.exp(b - m))


_FINAL = re.compile(r"(?:####|the (?:final )?answer is|answer\s*:)\s*(.+)", re.I)


def final_answer_text(text: str) -> str:
    """The part of a reasoning reply that states the answer: after the last "The answer is" / "####" /
    "Answer:", else the last non-empty line."""
    matches = list(_FINAL.finditer(text))
    if matches:
        return matches[-1].group(1).strip().splitlines()[0].strip().rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def to_prediction(text: str | None, ctx: StrategyContext, trace: Trace, *, reasoning: bool = False,
                  details: dict | None = None) -> Prediction:
    """A prediction from a final reply (None = the call failed). ``reasoning``: read the answer off the end."""
    if text is None:
        return Prediction(output="", answer=None, trace=trace, failed=True, details=details or {})
    c = ctx.task.config
    parsed = parse_output(final_answer_text(text) if reasoning else text, c.parse, c.labels, c.label_aliases)
    return Prediction(output=text, answer=parsed.value, trace=trace, parse_failed=parsed.failed, details=details or {})
