"""classifier: the input alone, scored over the labels by a model trained to classify it (a tuned head)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from taskfit.backends import ScoreRequest
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.prompts import render_input
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

DESCRIPTION = "The input alone, scored over the labels by a classification model (a tuned head)."


class ClassifierOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Classifier:
    def __init__(self, ctx: StrategyContext):
        if not ctx.task.config.labels:
            raise TaskfitError("the classifier strategy needs the task's `labels`", field="labels")
        self.ctx = ctx

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        labels = tuple(self.ctx.task.config.labels)
        traces = [Trace() for _ in examples]
        reqs = [ScoreRequest(({"role": "user", "content": render_input(self.ctx.parts, ex)},), labels)
                for ex in examples]
        preds = []
        for res, trace in zip(lm.score(reqs, traces), traces, strict=True):
            if res.error:
                preds.append(Prediction(output="", answer=None, trace=trace, failed=True))
                continue
            best = max(range(len(labels)), key=lambda i: res.logprobs[i])
            preds.append(Prediction(output=labels[best], answer=labels[best], trace=trace,
                                    details={"label_logprobs": dict(zip(labels, res.logprobs, strict=True))}))
        return preds


Options = ClassifierOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Classifier:
    parse_options(ClassifierOptions, spec)
    return Classifier(ctx)
