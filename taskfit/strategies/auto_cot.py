"""auto_cot: demonstrations built without labels or written rationales (Zhang et al., 2023). The train
inputs are embedded with the bundled MiniLM encoder and clustered into k groups; the input nearest each
group's centre (short enough to make a clean demo) is solved with zero-shot chain-of-thought, and these k
worked solutions become the demonstrations of a few-shot chain-of-thought prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import render_input
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.strategies.steps import ANSWER_TRIGGER, Steps, charge_setup, demos_apart, reason_with_demos
from taskfit.strategies.zero_shot_cot import ZeroShotCoT, ZeroShotCoTOptions
from taskfit.taskfile import StrategySpec

if TYPE_CHECKING:  # numpy, scikit-learn and the encoder load when demos are built, not when a task is checked
    import numpy as np

DESCRIPTION = "Auto-CoT: cluster train inputs (MiniLM), zero-shot-CoT one representative per cluster, use them as CoT demos."


class AutoCoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(4, ge=1, description="Clusters, hence demonstrations.")
    pool: int = Field(200, ge=1, description="First train rows clustered (embedding cost grows with it).")
    max_words: int = Field(60, ge=1, description="Representatives longer than this are skipped when the cluster "
                                                  "has a shorter member (the Auto-CoT simplicity heuristic).")
    trigger: str = "Let's think step by step."
    demo_tokens: int = Field(192, ge=1, description="Length of a demo's generated reasoning.")
    max_tokens: int = Field(192, ge=1, description="Length of the query's reasoning.")
    answer_trigger: str = ANSWER_TRIGGER
    system: str | None = None


def representatives(vectors: np.ndarray, k: int, seed: int, lengths: list[int], max_words: int) -> list[int]:
    """Per k-means cluster, the member nearest its centre among those of at most ``max_words`` (else the
    nearest of all); clusters in order of their first member."""
    import numpy as np
    from sklearn.cluster import KMeans

    k = min(k, len(vectors))
    km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(vectors)
    dist = np.linalg.norm(vectors - km.cluster_centers_[km.labels_], axis=1)
    out = []
    for c in range(k):
        members = sorted(np.flatnonzero(km.labels_ == c), key=lambda j: (dist[j], j))
        short = [j for j in members if lengths[j] <= max_words]
        out.append(int((short or members)[0]))
    return sorted(out)


class AutoCoT:
    def __init__(self, options: AutoCoTOptions, ctx: StrategyContext):
        if not ctx.train:
            raise TaskfitError("auto_cot clusters the train split, which this task lacks", field="data.train")
        self.options, self.ctx = options, ctx
        self.demos: list[tuple[Example, str]] | None = None

    def build_demos(self, lm: LM) -> tuple[list[tuple[Example, str]], list]:
        """The k representatives and their zero-shot-CoT replies; also the traces of the calls made."""
        from taskfit import embeddings

        o, parts = self.options, self.ctx.parts
        pool = self.ctx.train[: o.pool]
        texts = [render_input(parts, e) for e in pool]
        chosen = [pool[j] for j in representatives(embeddings.embed(texts), o.k, self.ctx.seed,
                                                    [len(t.split()) for t in texts], o.max_words)]
        solver = ZeroShotCoT(ZeroShotCoTOptions(trigger=o.trigger, answer_trigger=o.answer_trigger,
                                                max_tokens=o.demo_tokens, system=o.system), self.ctx)
        solved = solver.predict(chosen, lm)
        demos = [(d, f"{o.trigger} {p.details['reasoning'].strip()}\n{o.answer_trigger} {p.answer or p.output}.")
                 for d, p in zip(chosen, solved, strict=True)]
        return demos, [p.trace for p in solved]

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        o = self.options
        s = Steps(examples, lm, self.ctx, o.system)
        if self.demos is None:
            self.demos, setup = self.build_demos(lm)
            charge_setup(s.traces[examples[0].id], setup, "demo")
        preds = reason_with_demos(s, self.demos, o.trigger, o.max_tokens, o.answer_trigger)
        for ex, p in zip(examples, preds, strict=True):
            p.details["demos"] = [d.id for d, _ in demos_apart(self.demos, ex, self.ctx)]
        return preds


Options = AutoCoTOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> AutoCoT:
    return AutoCoT(parse_options(AutoCoTOptions, spec), ctx)
