"""The forgetting check: what a model can still do outside the task, before vs after tuning.

Causal LMs: perplexity on 40 Wikipedia paragraphs and zero-shot topic accuracy (label scoring) on 60 AG News
rows. Encoders: question -> paragraph retrieval (recall@1 over the same 40 paragraphs) with mean-pooled
embeddings. Samples ship with taskfit (``taskfit/data/general``, see its SOURCE.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from taskfit.backends import ScoreRequest
from taskfit.backends.tuned import live_backend
from taskfit.bundled import cache_root

GENERAL = Path(__file__).resolve().parents[1] / "data" / "general"
AG_LABELS = ["World", "Sports", "Business", "Science"]  # one token each: one forward pass per row
AG_GOLD = {"Sci/Tech": "Science"}
AG_PROMPT = "What is the topic of this news article: World, Sports, Business or Science?\n\n{text}"
AG_ROWS = 40


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (GENERAL / name).read_text().splitlines() if line.strip()]


@torch.inference_mode()
def perplexity(model, tokenizer, device: torch.device, max_length: int = 128, n: int = 24) -> float:
    """Token-weighted perplexity of ``n`` general paragraphs, each cut to ``max_length`` tokens."""
    texts = [r["text"] for r in _rows("text.jsonl")[:n]]
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), 8):
        sl = slice(start, start + 8)
        logits = model(input_ids=enc["input_ids"][sl], attention_mask=enc["attention_mask"][sl]).logits.float()
        target = labels[sl][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((target != -100).sum())
    return math.exp(total_nll / total_tokens)


def topic_accuracy(model, tokenizer, device: torch.device, chat_template: bool) -> float:
    """Zero-shot AG News accuracy: the label whose tokens are most likely as the start of the reply (the
    evaluation backend's own label scoring, around the model as it is now)."""
    backend = live_backend(model, tokenizer, device, chat_template, "forgetting-check")
    rows = _rows("ag_news.jsonl")[:AG_ROWS]
    reqs = [ScoreRequest(({"role": "user", "content": AG_PROMPT.format(text=r["text"])},
                          {"role": "assistant", "content": "Topic:"}), tuple(" " + lab for lab in AG_LABELS))
            for r in rows]
    # contextual calibration (as the task's label scoring does): without it a 135M model picks one topic
    blank = ScoreRequest(({"role": "user", "content": AG_PROMPT.format(text="N/A")},
                          {"role": "assistant", "content": "Topic:"}), reqs[0].continuations)
    *results, offset = backend.score([*reqs, blank])
    correct = 0
    for res, r in zip(results, rows, strict=True):
        calibrated = [lp - o for lp, o in zip(res.logprobs, offset.logprobs, strict=True)]
        correct += AG_LABELS[max(range(len(AG_LABELS)), key=calibrated.__getitem__)] == AG_GOLD.get(r["label"], r["label"])
    return correct / len(rows)


@torch.inference_mode()
def retrieval_recall(encoder, tokenizer, device: torch.device) -> float:
    """Recall@1 of question -> paragraph retrieval with mean-pooled, normalised embeddings."""
    docs = _rows("text.jsonl")
    qs = _rows("retrieval.jsonl")

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(device)
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    d = torch.cat([embed([r["text"] for r in docs[i:i + 16]]) for i in range(0, len(docs), 16)])
    q = embed([r["question"] for r in qs])
    best = (q @ d.T).argmax(dim=1).tolist()
    ids = [r["doc_id"] for r in docs]
    return sum(ids[b] == r["doc_id"] for b, r in zip(best, qs, strict=True)) / len(qs)


def _causal(model):
    """The model to call for LM outputs (a PEFT wrapper forwards to its base with the adapter active)."""
    return model


def measure(model, tokenizer, device: torch.device, objective: str, chat_template: bool) -> dict[str, float | None]:
    """General-ability figures for one model state (call before and after training)."""
    was_training = model.training
    model.eval()
    try:
        if objective == "classify":
            # the bare encoder inside (BertModel under BertForSequenceClassification, under a PEFT wrapper)
            encoder = next((m for m in model.modules() if hasattr(m, "embeddings") and hasattr(m, "encoder")), None)
            if encoder is None:  # a causal LM with a classification head: no encoder measure
                return {"perplexity": None, "score": None}
            return {"perplexity": None, "score": retrieval_recall(encoder, tokenizer, device)}
        return {"perplexity": perplexity(model, tokenizer, device),
                "score": topic_accuracy(model, tokenizer, device, chat_template)}
    finally:
        model.train(was_training)


def baseline(model, tokenizer, device: torch.device, objective: str, chat_template: bool,
             base_fingerprint: str) -> dict[str, float | None]:
    """The base model's figures (``measure`` before training), computed once per base model and kept beside
    the model cache."""
    path = cache_root() / "forgetting" / f"{base_fingerprint}-{objective}-{int(chat_template)}-{device.type}.json"
    if path.exists():
        return json.loads(path.read_text())
    measures = measure(model, tokenizer, device, objective, chat_template)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measures))
    return measures


def summary(before: dict[str, float | None], after: dict[str, float | None], objective: str) -> dict[str, Any]:
    task = "retrieval recall@1 (SQuAD paragraphs)" if objective == "classify" else "AG News zero-shot accuracy"
    out: dict[str, Any] = {"general_task": task, "ppl_before": before["perplexity"], "ppl_after": after["perplexity"],
                           "score_before": before["score"], "score_after": after["score"]}
    if before["score"] is not None and after["score"] is not None:
        out["score_change"] = after["score"] - before["score"]
    if before["perplexity"] and after["perplexity"]:
        out["ppl_change_pct"] = 100 * (after["perplexity"] / before["perplexity"] - 1)
    return out
