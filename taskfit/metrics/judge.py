"""LLM-as-judge: a judge model grades the answer against the question, the reference answer and a rubric.

The judge is any model spec (default: the bundled model; a local folder, or an OpenAI-compatible server).
On a backend that can score, the verdict is read from the log-likelihood of each verdict word after
"Verdict:", as label scoring does for tasks: no parsing, and a probability that says how sure the judge
is. Otherwise the judge writes a reply and the first verdict word (or rating) in it is taken.

How far a judge can be trusted is measured, not assumed: ``calibrate`` compares its verdicts with human
(or gold) labels (accuracy and Cohen's kappa) and grades every item twice, under two prompt orderings (or
two samples at temperature > 0), to give its run-to-run flip rate. ``taskfit judge-check`` prints these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from taskfit.backends import GenerateRequest, Message, ScoreRequest, backend_options
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import Scored, read_options
from taskfit.taskfile import ModelSpec
from taskfit.types import PredictionRow

DEFAULT_RUBRIC = (
    "The candidate answer is correct if it states what the reference answer states, in any wording; "
    "extra correct detail is fine. A partly right, vague, contradictory or off-topic answer is "
    "incorrect."
)
SYSTEM = "You are a careful, strict grader. You judge answers against a reference and a rubric."
VERDICT_PREFIX = "Verdict:"
CONTENT_FREE = "N/A"
_WORD = re.compile(r"\b(incorrect|correct|wrong|right)\b", re.I)
_RATING = re.compile(r"\b(\d+)\b")


@dataclass(frozen=True)
class JudgeItem:
    """What the judge sees: question, reference answer (None: judge on the rubric alone), candidate."""

    question: str
    candidate: str
    reference: str | None = None


@dataclass(frozen=True)
class Verdict:
    score: float | None  # in [0, 1]; None when a written verdict could not be read
    confidence: float | None = None  # probability of the chosen verdict (scored verdicts only)
    raw: str = ""  # the verdict word or the judge's reply


def model_spec(value: Any) -> ModelSpec:
    """A judge model from a task-file value: None or 'bundled', a local path, or a model mapping."""
    if value is None or value == "bundled":
        return ModelSpec(backend="hf", path="bundled")
    if isinstance(value, str):
        return ModelSpec(backend="hf", path=value)
    if isinstance(value, dict):
        try:
            spec = ModelSpec.model_validate(value)
            backend_options(spec)  # the backend's own keys, checked now rather than at the first call
            return spec
        except Exception as e:  # pydantic's message names the bad key
            raise TaskfitError(
                f"metric 'judge': option 'model' is not a valid model: {e}", field="metrics.judge.model"
            ) from None
    raise TaskfitError(
        f"metric 'judge': option 'model' must be a name, a path or a mapping, got {value!r}",
        field="metrics.judge.model",
    )


class Judge:
    """A grading prompt plus a verdict reader, over one judge model behind the call cache."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        rubric: str = DEFAULT_RUBRIC,
        scale: int = 2,
        mode: Literal["auto", "score", "generate"] = "auto",
        temperature: float = 0.0,
        max_tokens: int = 16,
        calibrate: bool = True,
        lm: Any = None,
        workspace: Any = None,
    ):
        if scale < 2:
            raise TaskfitError(
                "metric 'judge': option 'scale' must be 2 (correct/incorrect) or more (a 1-N rating)",
                field="metrics.judge.scale",
            )
        if mode not in ("auto", "score", "generate"):
            raise TaskfitError(
                f"metric 'judge': option 'mode' must be auto, score or generate, got {mode!r}",
                field="metrics.judge.mode",
            )
        self.spec, self.rubric, self.scale, self.mode = spec, rubric, scale, mode
        self.temperature, self.max_tokens, self.calibrate = temperature, max_tokens, calibrate
        self._lm = lm  # built on first use: creating the metric (e.g. for the leaderboard) loads no model
        self.workspace = workspace  # its call cache keeps the judge's calls; its tuned models may judge

    @property
    def lm(self):
        if self._lm is None:
            from taskfit.backends import build_backend
            from taskfit.lm import LM

            if self.workspace is None:
                raise TaskfitError("metric 'judge': its calls are cached in a workspace; none was given",
                                   field="metrics.judge")
            self._lm = LM(build_backend(self.spec, self.workspace), self.workspace.cache)
        return self._lm

    @property
    def labels(self) -> list[str]:
        """Verdict words (or ratings), worst first."""
        return ["incorrect", "correct"] if self.scale == 2 else [str(i) for i in range(1, self.scale + 1)]

    def uses_scores(self) -> bool:
        return self.mode == "score" or (self.mode == "auto" and self.lm.can_score)

    def messages(self, item: JudgeItem, order: int = 0, prefill: bool = True) -> tuple[Message, ...]:
        """The grading prompt. ``order`` 1 swaps the reference and candidate blocks and the verdict words, so
        two orderings show how much the verdict depends on presentation."""
        blocks = [f"Question: {item.question}"]
        answer_blocks = [f"Candidate answer: {item.candidate}"]
        if item.reference is not None:
            answer_blocks.insert(0, f"Reference answer: {item.reference}")
        if order % 2:
            answer_blocks.reverse()
        words = self.labels if order % 2 else list(reversed(self.labels))
        if self.scale == 2:
            ask = f"Is the candidate answer correct? Reply with one word: {words[0]} or {words[1]}."
        else:
            ask = (
                f"Rate the candidate answer from 1 (wrong) to {self.scale} (fully correct). "
                f"Reply with the number only."
            )
        user = "\n\n".join(
            [f"Grade the candidate answer.\nRubric: {self.rubric}", "\n".join(blocks + answer_blocks), ask]
        )
        msgs: list[Message] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        if prefill:
            msgs.append({"role": "assistant", "content": VERDICT_PREFIX})
        return tuple(msgs)

    def grade(self, items: list[JudgeItem], order: int = 0, seed: int = 0, traces: list | None = None) -> list[Verdict]:
        """Verdicts for ``items``, in one batch of model calls (cached like every call); ``traces``, one per
        item, record the calls made for it (the calibration call is charged to the first item)."""
        from taskfit.lm import Trace

        if not items:
            return []
        traces = traces if traces is not None else [Trace() for _ in items]
        if self.uses_scores():
            conts = tuple(" " + w for w in self.labels)
            results = self.lm.score(
                [ScoreRequest(self.messages(it, order), conts) for it in items], traces, step="judge"
            )
            offset = [0.0] * len(conts)
            if self.calibrate:
                # contextual calibration (Zhao et al., 2021): a small judge leans towards one verdict whatever
                # it reads; the log-likelihoods it gives a content-free item measure that lean
                blank = JudgeItem(
                    CONTENT_FREE, CONTENT_FREE, CONTENT_FREE if items[0].reference is not None else None
                )
                (cf,) = self.lm.score(
                    [ScoreRequest(self.messages(blank, order), conts)], traces[:1] or [Trace()], step="judge"
                )
                offset = offset if cf.error else cf.logprobs
            return [
                Verdict(None, raw=r.error or "")
                if r.error
                else self._from_logprobs([lp - o for lp, o in zip(r.logprobs, offset, strict=True)])
                for r in results
            ]
        # a written verdict: no assistant prefill (not every chat server continues one)
        reqs = [
            GenerateRequest(
                self.messages(it, order, prefill=False),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=seed,
            )
            for it in items
        ]
        results = self.lm.generate(reqs, traces, step="judge")
        return [
            Verdict(None, raw=r.error or "") if r.error else self.parse(r.texts[0] if r.texts else "")
            for r in results
        ]

    def _from_logprobs(self, logprobs: list[float]) -> Verdict:
        top = max(logprobs)
        weights = [math.exp(lp - top) for lp in logprobs]
        probs = [w / sum(weights) for w in weights]
        best = max(range(len(probs)), key=probs.__getitem__)
        return Verdict(best / (len(self.labels) - 1), confidence=probs[best], raw=self.labels[best])

    def parse(self, text: str) -> Verdict:
        """The verdict in a written reply: the first verdict word, or the first rating in range."""
        if self.scale == 2:
            m = _WORD.search(text)
            if not m:
                return Verdict(None, raw=text)
            return Verdict(float(m.group(1).lower() in ("correct", "right")), raw=text)
        for m in _RATING.finditer(text):
            value = int(m.group(1))
            if 1 <= value <= self.scale:
                return Verdict((value - 1) / (self.scale - 1), raw=text)
        return Verdict(None, raw=text)


def question_text(example: Example, fields: list[str] | None) -> str:
    """The question as the judge sees it: the named fields, else every field but the answer and the id."""
    if fields:
        missing = [f for f in fields if f not in example.fields]
        if missing:
            raise TaskfitError(
                f"metric 'judge': field {missing[0]!r} is not in example {example.id!r}",
                field="metrics.judge.fields",
            )
        names = fields
    else:
        answers = set(example.answers) | {example.target}
        names = [
            k
            for k, v in example.fields.items()
            if k != "id" and isinstance(v, str | int | float) and str(v) not in answers
        ]
    if len(names) == 1:
        return str(example.fields[names[0]])
    return "\n".join(f"{k}: {example.fields[k]}" for k in names)


@dataclass
class JudgeMetric:
    """The metric: one judge verdict per prediction; an unreadable verdict scores 0."""

    judge: Judge
    fields: list[str] | None = None
    reference: bool = True

    @property
    def binary(self) -> bool:
        return self.judge.scale == 2

    def item(self, prediction: str, example: Example) -> JudgeItem:
        ref = " | ".join(example.answers or (example.target,)) if self.reference else None
        return JudgeItem(question_text(example, self.fields), prediction, ref)

    def __call__(self, prediction: str | None, example: Example) -> float:
        (scored,) = self.score_batch([prediction], [example])
        return scored.value

    def score_batch(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> list[Scored]:
        """Every answered example graded in one batch of judge calls; each score carries the verdict as its
        reason and the judge calls, tokens and cost spent on it. A missing answer scores 0, ungraded."""
        from taskfit.lm import Trace

        todo = [i for i, p in enumerate(predictions) if p is not None]
        traces = [Trace() for _ in todo]
        verdicts = self.judge.grade([self.item(predictions[i], examples[i]) for i in todo], traces=traces)  # type: ignore[arg-type]
        out = [Scored(0.0) for _ in predictions]
        spec = self.judge.spec
        for i, v, t in zip(todo, verdicts, traces, strict=True):
            tin, tout = t.total("tokens_in"), t.total("tokens_out")
            reason = v.raw + (f" (p = {v.confidence:.2f})" if v.confidence is not None else "")
            out[i] = Scored(v.score or 0.0, reason=reason or None, calls=t.n_calls, tokens_in=tin, tokens_out=tout,
                            cost=(tin * spec.price_in_per_1m + tout * spec.price_out_per_1m) / 1e6)
        return out


def create(*, workspace: Any = None, **options: Any) -> JudgeMetric:
    """Options: model (default bundled), rubric, scale (2: correct/incorrect; N: a 1-N rating), fields (the
    question's fields), reference (show the gold answer, default true), mode (auto/score/generate),
    temperature, max_tokens, calibrate (scored verdicts: remove the judge's lean to one verdict; default
    true)."""
    o = read_options(
        "judge",
        options,
        model=None,
        rubric=DEFAULT_RUBRIC,
        scale=2,
        fields=None,
        reference=True,
        mode="auto",
        temperature=0.0,
        max_tokens=16,
        calibrate=True,
    )
    if o["fields"] is not None and not (
        isinstance(o["fields"], list) and all(isinstance(f, str) for f in o["fields"])
    ):
        raise TaskfitError(
            "metric 'judge': option 'fields' must be a list of field names", field="metrics.judge.fields"
        )
    judge = Judge(
        model_spec(o["model"]),
        rubric=o["rubric"],
        scale=o["scale"],
        mode=o["mode"],
        temperature=o["temperature"],
        max_tokens=o["max_tokens"],
        calibrate=o["calibrate"],
        workspace=workspace,
    )
    return JudgeMetric(judge, fields=o["fields"], reference=o["reference"])


# -- calibration -----------------------------------------------------------------------------------------


def cohen_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two raters' labels (scikit-learn's when installed); 1.0 when both give one label."""
    try:
        from sklearn.metrics import cohen_kappa_score
    except ImportError:
        cohen_kappa_score = None
    if len(set(a) | set(b)) < 2:
        return 1.0  # both raters agree on a single label throughout; kappa is undefined (0/0)
    if cohen_kappa_score is not None:
        return float(cohen_kappa_score(a, b))
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    expected = sum((a.count(k) / n) * (b.count(k) / n) for k in set(a) | set(b))
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


@dataclass
class Calibration:
    n: int  # items with a readable verdict in both runs
    accuracy: float  # judge-human agreement
    kappa: float  # Cohen's kappa, chance-corrected agreement
    flip_rate: float  # share of items whose verdict changed between the two runs
    unreadable: int  # items dropped because a verdict could not be read
    judge_positive: float
    human_positive: float
    repeat: str  # what the second run changed


def calibrate(judge: Judge, items: list[JudgeItem], human: list[int]) -> tuple[Calibration, list[Verdict]]:
    """Judge-human agreement and the judge's run-to-run flip rate on labelled items (human: 1 correct, 0 not).

    The second run samples again at temperature > 0 (generated verdicts), else swaps the prompt's ordering.
    """
    if len(items) != len(human):
        raise ValueError("one human label per item")
    first = judge.grade(items, order=0, seed=0)
    sampled = not judge.uses_scores() and judge.temperature > 0
    second = judge.grade(items, order=0, seed=1) if sampled else judge.grade(items, order=1)
    keep = [i for i in range(len(items)) if first[i].score is not None and second[i].score is not None]
    j1 = [int(first[i].score >= 0.5) for i in keep]  # type: ignore[operator]
    j2 = [int(second[i].score >= 0.5) for i in keep]  # type: ignore[operator]
    h = [int(human[i]) for i in keep]
    n = len(keep)
    cal = Calibration(
        n=n,
        accuracy=sum(x == y for x, y in zip(j1, h, strict=True)) / n if n else 0.0,
        kappa=cohen_kappa(j1, h) if n else 0.0,
        flip_rate=sum(x != y for x, y in zip(j1, j2, strict=True)) / n if n else 0.0,
        unreadable=len(items) - n,
        judge_positive=sum(j1) / n if n else 0.0,
        human_positive=sum(h) / n if n else 0.0,
        repeat="a second sample (seed 1)" if sampled else "the swapped prompt ordering",
    )
    return cal, first


POSITIVE = ("correct", "true", "yes", "1", "right", "positive", "1.0")


def items_from_rows(
    examples: list[Example],
    *,
    inputs: list[str],
    candidate: str,
    reference: str | None,
    human: str,
    positive: tuple[str, ...] = POSITIVE,
) -> tuple[list[JudgeItem], list[int]]:
    """Labelled items from data rows that hold a candidate answer and a human verdict (e.g. graded student
    answers): the question is the task's other input fields."""
    items, labels = [], []
    for ex in examples:
        for name in [candidate, human] + ([reference] if reference else []):
            if name not in ex.fields:
                file, _, line = ex.source.rpartition(":")
                raise TaskfitError(
                    f"judge-check: row has no field {name!r} (fields: {', '.join(ex.fields)})",
                    file=file or None,
                    line=int(line) if line.isdigit() else None,
                    field=name,
                )
        shown = [f for f in inputs if f not in (candidate, reference)]
        question = "\n".join(str(ex.fields[f]) if len(shown) == 1 else f"{f}: {ex.fields[f]}" for f in shown)
        items.append(
            JudgeItem(question, str(ex.fields[candidate]), str(ex.fields[reference]) if reference else None)
        )
        labels.append(int(str(ex.fields[human]).strip().lower() in positive))
    return items, labels


def items_from_predictions(
    preds: list[PredictionRow], gold_metric: str
) -> tuple[list[JudgeItem], list[int]]:
    """Labelled items from a run's stored predictions: the model's answer as the candidate, the target as the
    reference, and a stored 0/1 metric (e.g. exact_match) as the gold verdict."""
    items, labels = [], []
    for p in preds:
        if p.answer is None:
            continue
        if gold_metric not in p.metrics:
            raise TaskfitError(
                f"judge-check: the run has no stored metric {gold_metric!r} "
                f"(it has: {', '.join(p['metrics'])})",
                field="--gold-metric",
            )
        inputs = p.inputs
        question = "\n".join(str(v) if len(inputs) == 1 else f"{k}: {v}" for k, v in inputs.items())
        items.append(JudgeItem(question, str(p.answer), p.target))
        labels.append(int(p.metrics[gold_metric] >= 0.5))
    return items, labels


def judge_model_for(task: Any, name: str | None = None) -> ModelSpec:
    """The judge for a task: model row or path ``name``, else the task's first local model, else bundled."""
    models = task.config.models
    if name:
        return next((m for m in models if m.label() == name), None) or model_spec(name)
    return next((m for m in models if m.backend != "openai"), None) or model_spec(None)
