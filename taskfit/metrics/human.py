"""Human labels: 1 when a reviewer marked this answer to this example correct (in `taskfit ui`), else 0.

Labels are read from the database when the metric is created, keyed by example id and normalised answer,
so every strategy that gives an already-reviewed answer is scored by that review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import Metric, build_metric, read_options

if TYPE_CHECKING:
    from taskfit.workspace import Workspace


@dataclass(frozen=True)
class Human:
    verdicts: dict[tuple[str, str], str]  # (example id, answer key) -> correct | incorrect
    fallback: Metric | None  # scores answers nobody has reviewed; None scores them 0
    binary: bool = True

    def __call__(self, prediction: str | None, example: Example) -> float:
        from taskfit.review import label_key

        verdict = self.verdicts.get((example.id, label_key(prediction)))
        if verdict is not None:
            return float(verdict == "correct")
        return float(self.fallback(prediction, example)) if self.fallback else 0.0


def create(*, workspace: Workspace | None = None, **options: Any) -> Human:
    """Options: task (labels of this task name only; default: any task), fallback (a metric name for
    unreviewed answers; default: they score 0). Labels are read from ``workspace``."""
    from taskfit.review import labels

    o = read_options("human", options, task="", fallback="")
    if workspace is None:
        raise TaskfitError("metric 'human': review labels are read from a workspace; none was given",
                           field="metrics.human")
    found = labels(workspace.engine, o["task"] or None)
    if not found:
        where = f" for task {o['task']!r}" if o["task"] else ""
        raise TaskfitError(
            f"metric 'human': no reviewed answers{where} in {workspace.describe()}; "
            "label some with `taskfit ui` first",
            field="metrics.human",
        )
    if o["fallback"] == "human":
        raise TaskfitError("metric 'human': fallback cannot be 'human'", field="metrics.human.fallback")
    fallback = build_metric(o["fallback"], {}, workspace) if o["fallback"] else None
    return Human(
        verdicts={k: v.verdict for k, v in found.items()},
        fallback=fallback,
        binary=fallback.binary if fallback else True,
    )
