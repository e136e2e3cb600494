"""A teacher labelling train rows draws its demonstrations from those rows: the prompt for a row never shows that
row, or another row with its very input, as a demonstration (every strategy that picks demos from train)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from conftest import write_jsonl

from taskfit.dataset import Example
from taskfit.selection import balanced, fixed, knn, random_demos

WORDS = ["great", "terrible", "fine", "awful", "lovely", "boring", "superb", "dull"]
LABELS = ["positive", "negative"] * 4


def _train() -> list[dict]:
    rows = [{"id": f"t{i}", "text": f"<<{w} {i}>>", "label": LABELS[i], "why": f"It says {w}.",
             "program": f"answer = {LABELS[i]!r}"} for i, w in enumerate(WORDS)]
    # the same input as t0 under another id (a duplicate in the data): no more a demo for t0 than t0 itself
    return rows + [{**rows[0], "id": "t0-copy"}]


@pytest.fixture
def fake_embeddings(monkeypatch):
    """Bag-of-letters vectors instead of MiniLM: knn and auto_cot pick by similarity without loading a model."""
    from taskfit import embeddings

    def embed(texts, model_path=None, batch_size=64):
        out = np.zeros((len(texts), 27), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                out[i, ord(ch) - 97 if "a" <= ch <= "z" else 26] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    monkeypatch.setattr(embeddings, "embed", embed)


STRATEGIES = [
    {"name": "few_shot", "k": 2, "selection": "fixed"},
    {"name": "few_shot", "k": 2, "selection": "fixed", "examples": ["t0", "t3"]},
    {"name": "few_shot", "k": 2, "selection": "balanced"},
    {"name": "few_shot", "k": 3, "selection": "random"},
    {"name": "few_shot", "k": 2, "selection": "knn"},
    {"name": "cot", "k": 2, "selection": "fixed", "rationale_field": "why"},
    {"name": "cot", "k": 2, "selection": "knn", "rationale_field": "why"},
    {"name": "structured", "k": 2, "selection": "fixed"},
    {"name": "program_of_thought", "k": 2, "program_field": "program"},
    {"name": "contrastive_cot", "k": 2, "rationale_field": "why"},
    pytest.param({"name": "auto_cot", "k": 2}, marks=pytest.mark.slow),  # imports scikit-learn: seconds
    {"name": "active_prompt", "k": 2, "samples": 2, "rationale_field": "why"},
]


def _prompt_text(request) -> str:
    return "\n".join(str(m.get("content") or "") for m in request.messages)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: "-".join(str(v) for v in s.values())[:40])
def test_a_teacher_labelling_train_rows_never_sees_the_row_as_a_demo(strategy, tmp_path, workspace, fake_embeddings):
    from taskfit.distill.label import label
    from taskfit.runner import Arm, BackendPool
    from taskfit.study import prepare
    from taskfit.taskfile import StrategySpec

    write_jsonl(tmp_path / "data" / "train.jsonl", _train())
    write_jsonl(tmp_path / "data" / "test.jsonl", _train()[:2])
    config = {"name": "demos", "data": {"train": "data/train.jsonl", "test": "data/test.jsonl"},
              "inputs": ["text"], "output": "label", "labels": ["negative", "positive"],
              "prompt": {"instruction": "Positive or negative?", "input_template": "Review: {{ text }}"},
              "strategies": [strategy], "models": [{"backend": "scripted", "name": "teacher",
                                                    "script": {"default": "The answer is positive."}}]}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(config))
    task, ds = prepare(path)
    train = ds.split("train")
    arm = Arm(StrategySpec.model_validate(strategy), task.config.models[0])
    backend = BackendPool().get(arm.model)
    label(task, arm, train, backend=backend, workspace=workspace, demos=train)
    texts = sorted({ex.fields["text"] for ex in train})
    with_demos = 0
    for request in backend.requests:
        prompt = _prompt_text(request)
        shown = [t for t in texts if t in prompt]
        if not shown:
            continue
        query = max(shown, key=prompt.rfind)  # the row asked about comes after its demonstrations
        assert prompt.count(query) == 1, f"{query} is a demonstration in its own prompt:\n{prompt}"
        with_demos += len(shown) > 1
    assert with_demos, "no prompt had a demonstration: the test checked nothing"


def _rows(n: int) -> list[Example]:
    return [Example(id=f"p{i}", fields={"text": f"t{i % 4}"}, target="ab"[i % 2], answers=("ab"[i % 2],))
            for i in range(n)]


def _same(e: Example) -> str:
    return e.fields["text"]


@pytest.mark.parametrize("select", [fixed, balanced, random_demos])
def test_selection_leaves_out_the_query_and_its_duplicates_and_keeps_k(select):
    pool = _rows(12)  # p0, p4 and p8 share an input
    demos = select(pool, pool, 2, 0, same=_same)
    for q, ds in zip(pool, demos, strict=True):
        assert len(ds) == 2 and all(d.id != q.id and _same(d) != _same(q) for d in ds), (q.id, [d.id for d in ds])


def test_knn_leaves_out_the_query_and_its_duplicates(fake_embeddings):
    pool = _rows(8)
    for q, ds in zip(pool, knn(pool, pool, 3, 0, text=_same, same=_same), strict=True):
        assert len(ds) == 3 and all(_same(d) != _same(q) for d in ds)


def test_fixed_demos_stay_shared_by_queries_outside_them():
    pool = _rows(8)
    outside = [Example(id="new", fields={"text": "unseen"}, target="a", answers=("a",))]
    assert [d.id for d in fixed(pool, outside, 2, 0, same=_same)[0]] == ["p0", "p1"]
    assert re.fullmatch(r"p\d", fixed(pool, pool[:1], 2, 0, same=_same)[0][0].id)
