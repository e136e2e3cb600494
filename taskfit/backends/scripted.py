"""A scripted stand-in model for tests and demos: canned replies and label scores, no weights.

Task-file form (``backend: scripted``)::

    script:
      replies: {"capital of England": "London"}   # first key found in the prompt wins
      default: "I don't know"
      scores: {"great": {"positive": -0.1, "negative": -3.0}}   # label scoring by prompt substring
      delay_s: 0.0          # sleep per request (to test timeouts and kills)
      fail_on: "BOOM"       # requests whose prompt contains this fail
      call_log: calls.txt   # append one line per request actually sent (to count model calls)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, backend_options
from taskfit.backends.facts import ModelFacts, words
from taskfit.taskfile import ModelSpec


class Options(BaseModel):
    """``backend: scripted``: canned replies, for tests and demos."""

    model_config = ConfigDict(extra="forbid")
    script: dict[str, Any] | None = Field(None, description="Canned replies and scores (see taskfit/backends/"
                                          "scripted.py): replies, default, scores, delay_s, fail_on, call_log.")


def create(spec: ModelSpec) -> ScriptedBackend:
    return ScriptedBackend(backend_options(spec).script or {}, name=spec.label())


def facts(spec: ModelSpec, cache: Any) -> ModelFacts:
    """A script is not a model: building one loads nothing, and it is the exact identity; a token is a word."""
    return ModelFacts(create(spec).model_id, words, False)


class ScriptedBackend:
    local = True
    supports_score = True
    supports_tools = False
    batch_size = 1

    def __init__(self, script: dict[str, Any], name: str = "scripted",
                 reply: Callable[[GenerateRequest], str] | None = None):
        self.script = script
        self.reply_fn = reply
        digest = hashlib.sha256(json.dumps(script, sort_keys=True, default=str).encode()).hexdigest()[:10]
        self.model_id = f"scripted:{name}:{digest}"
        self.requests: list[Any] = []  # every request received, in order

    def describe(self) -> dict[str, Any]:
        return {"backend": "scripted", "script": self.script}

    def _receive(self, kind: str, request) -> tuple[str, bool]:
        """Record a request, simulate the model's work, log the finished call; returns (prompt, fails)."""
        self.requests.append(request)
        prompt = "\n".join(str(m.get("content") or "") for m in request.messages)
        if self.script.get("delay_s"):
            time.sleep(float(self.script["delay_s"]))
        if self.script.get("call_log"):
            with open(self.script["call_log"], "a") as f:
                f.write(json.dumps({"kind": kind, "prompt": prompt}) + "\n")
        return prompt, bool(self.script.get("fail_on")) and self.script["fail_on"] in prompt

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        out = []
        for r in requests:
            prompt, fails = self._receive("generate", r)
            if fails:
                out.append(GenerateResult(texts=[], error="scripted failure"))
                continue
            if self.reply_fn:
                text = self.reply_fn(r)
            else:
                text = next((v for k, v in self.script.get("replies", {}).items() if k in prompt),
                            self.script.get("default", ""))
            out.append(GenerateResult(texts=[text] * r.n, tokens_in=len(prompt.split()),
                                      tokens_out=len(text.split()) * r.n, latency_ms=1.0))
        return out

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        out = []
        for r in requests:
            prompt, fails = self._receive("score", r)
            if fails:
                out.append(ScoreResult(logprobs=[], error="scripted failure"))
                continue
            table = next((v for k, v in self.script.get("scores", {}).items() if k in prompt), {})
            lps = [float(table.get(c.strip(), -5.0)) for c in r.continuations]
            out.append(ScoreResult(logprobs=lps, token_counts=[1] * len(lps), tokens_in=len(prompt.split()),
                                   latency_ms=1.0))
        return out
