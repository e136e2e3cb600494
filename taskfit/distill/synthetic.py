"""New inputs written by the teacher's model in the style of the train inputs, for tasks with little data.

Each request shows a few train inputs (chosen with the seed; test rows are never shown) and asks for one new
input. Replies are deduplicated, after normalising case and spaces, against each other and against every
train, dev and test input, so a written row can never be a test row. Calls go through the call cache.
"""

from __future__ import annotations

import random
import re

from taskfit.backends import Backend, GenerateRequest
from taskfit.cache import CallCache
from taskfit.dataset import Dataset, Example
from taskfit.distill.label import LabellingCost
from taskfit.distill.spec import SyntheticSpec
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.parsing import extract_json
from taskfit.prompts import messages
from taskfit.runner import Arm
from taskfit.taskfile import Task

ROUNDS = 3  # requests per wanted input, at most, before giving up on duplicates


def synthesize(task: Task, dataset: Dataset, spec: SyntheticSpec, *, teacher: Arm, backend: Backend,
               cache: CallCache, log=lambda s: None) -> tuple[list[Example], LabellingCost]:
    """Up to ``spec.n`` new inputs (target empty: the teacher labels them next) and what writing them cost."""
    c = task.config
    pool = dataset.splits.get("train", [])
    if not pool:
        raise TaskfitError("synthetic inputs are written in the style of train inputs; the task has none",
                           file=str(task.path), field="distill[].synthetic")
    seen = {_norm(_inputs_text(c.inputs, ex.fields)) for exs in dataset.splits.values() for ex in exs}
    rng = random.Random(spec.seed)
    lm = LM(backend, cache)
    out: list[Example] = []
    cost = LabellingCost()
    attempt = 0
    while len(out) < spec.n and attempt < ROUNDS * spec.n:
        want = min(spec.n - len(out), ROUNDS * spec.n - attempt)
        reqs = []
        for _ in range(want):
            shown = rng.sample(pool, min(spec.shown, len(pool)))
            reqs.append(GenerateRequest(_prompt(task, shown), max_tokens=spec.max_tokens, temperature=1.0,
                                        seed=spec.seed * 1_000_003 + attempt))
            attempt += 1
        traces = [Trace() for _ in reqs]
        for res, trace in zip(lm.generate(reqs, traces, step="write input"), traces, strict=True):
            cost.calls += trace.n_calls
            cost.tokens_in += int(trace.total("tokens_in"))
            cost.tokens_out += int(trace.total("tokens_out"))
            fields = None if res.error or not res.texts else _fields(c.inputs, res.texts[0])
            if fields is None or _norm(_inputs_text(c.inputs, fields)) in seen or len(out) >= spec.n:
                continue
            seen.add(_norm(_inputs_text(c.inputs, fields)))
            out.append(Example(id=f"synthetic-{spec.seed}-{len(out)}", fields=fields, target="", source="synthetic"))
    cost.dollars = (cost.tokens_in * teacher.model.price_in_per_1m + cost.tokens_out * teacher.model.price_out_per_1m) / 1e6
    log(f"the teacher's model wrote {len(out)} new inputs in {cost.calls} calls")
    return out, cost


def _prompt(task: Task, shown: list[Example]) -> tuple:
    c = task.config
    single = len(c.inputs) == 1
    listed = "\n\n".join(f"Example {i + 1}:\n" + (str(ex.fields[c.inputs[0]]) if single else
                                                 _json({k: ex.fields[k] for k in c.inputs}))
                         for i, ex in enumerate(shown))
    what = f"the task: {c.description}" if c.description else f"the task {c.name}"
    ask = ("Write one new input, different from these, in the same style and of a similar length. "
           + ("Reply with the new input only." if single else
              f"Reply with one JSON object with the keys {', '.join(c.inputs)} and nothing else."))
    return messages(None, [("user", f"Here are inputs for {what}\n\n{listed}\n\n{ask}")])


def _fields(inputs: list[str], text: str) -> dict | None:
    text = text.strip()
    if len(inputs) == 1:
        text = re.sub(r"^(example \d+:|new input:)\s*", "", text, flags=re.I).strip().strip('"').strip()
        return {inputs[0]: text} if text else None
    value = extract_json(text)
    if not isinstance(value, dict) or any(k not in value for k in inputs):
        return None
    return {k: value[k] for k in inputs}


def _inputs_text(inputs: list[str], fields: dict) -> str:
    return "\n".join(str(fields.get(k, "")) for k in inputs)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _json(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
