"""A tuned LoRA adapter evaluated on an inference server that loads adapters at run time (vLLM dynamic LoRA).

The server serves the base model (``vllm serve BASE --enable-lora``, with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
The adapter is loaded with ``POST /v1/load_lora_adapter {lora_name, lora_path}``, addressed by that name like any
served model (so every label-scoring path of the ``openai`` backend applies), and unloaded with
``POST /v1/unload_lora_adapter {lora_name}`` when the backend is closed. Several adapters of one base share one
server. ``lora_path`` is the adapter folder as the server sees it: the same path unless ``adapter_root`` says where
the server mounts taskfit's tuned-model folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec


class ServeVia(BaseModel):
    """``models[].serve_via`` of a tuned model: the server that evaluates its adapter."""

    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(description="The server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(None, description="Environment variable holding the server's API key.")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers, each read from the environment variable named.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries on 429/5xx/timeouts.")
    score_via: Literal["auto", "completions", "chat_top_logprobs", "choice", "generate"] = Field(
        "auto", description="Label-scoring path, as for openai models; auto probes the server.")
    adapter_root: str | None = Field(
        None, description="Where the server sees taskfit's tuned-model folder (shared storage mounted elsewhere); "
        "default: the same path as on this machine.")
    unload: bool = Field(True, description="Unload the adapter from the server when the evaluation ends.")


def serve_via(spec: ModelSpec) -> ServeVia:
    try:
        return ServeVia.model_validate(spec.options.get("serve_via") or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise TaskfitError(f"models[].serve_via: {problems}", field="models[].serve_via") from None


def template(models: list[ModelSpec]) -> dict[str, Any] | None:
    """The ``serve_via`` of a task's ``{backend: tuned, serve_via: ...}`` entry without a path: every tuned model
    of the study (``--model tuned:<id>``, the ``tuning:`` rows) is then evaluated on that server."""
    for m in models:
        if is_template(m):
            return m.options["serve_via"]
    return None


def is_template(m: ModelSpec) -> bool:
    return m.backend == "tuned" and m.options.get("serve_via") is not None and not m.options.get("path")


def create(spec: ModelSpec, rec: Any, meta: dict[str, Any]) -> ServedAdapter:
    """Load tuned model ``rec``'s LoRA adapter into the server named by ``spec.serve_via``."""
    via = serve_via(spec)
    adapter = rec.folder / "adapter"
    config_file = adapter / "adapter_config.json"
    if meta.get("objective") == "classify" or not config_file.exists():
        raise TaskfitError(f"tuned:{rec.id} ({meta.get('method_used')}, {meta.get('objective')}) is not a LoRA "
                           "adapter of a causal LM; an inference server loads LoRA adapters only: drop serve_via",
                           field="models[].serve_via")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise TaskfitError(f"tuned:{rec.id} is a {config.get('peft_type')}{' (DoRA)' if config.get('use_dora') else ''} "
                           "adapter; vLLM's dynamic loading takes plain LoRA adapters only: drop serve_via",
                           field="models[].serve_via")
    lora_path = str(adapter.resolve())
    if via.adapter_root:
        lora_path = str(Path(via.adapter_root) / rec.folder.name / "adapter")
    return ServedAdapter(spec, via, rec.id, meta, lora_path, tokenizer=str(rec.folder / "tokenizer"))


class ServedAdapter:
    """The ``openai`` backend on the server's adapter name, with the adapter loaded on creation and unloaded on close."""

    local = False
    supports_tools = False

    def __init__(self, spec: ModelSpec, via: ServeVia, tune_id: str, meta: dict[str, Any], lora_path: str,
                 tokenizer: str):
        from taskfit.backends.openai import OpenAIBackend, _public_url

        self.via, self.lora_path = via, lora_path
        self.lora_name = f"taskfit-{tune_id}-{meta['weights_sha'][:8]}"
        inner = ModelSpec(backend="openai", base_url=via.base_url, model=self.lora_name, api_key_env=via.api_key_env,
                          headers_env=via.headers_env,
                          concurrency=via.concurrency, timeout_s=via.timeout_s, max_retries=via.max_retries,
                          score_via=via.score_via, tokenizer=tokenizer, chat_template=bool(meta.get("chat_template", True)))
        self.inner = OpenAIBackend(inner)
        self.server = _public_url(self.inner.base_url)
        self.model_id = f"tuned:{tune_id}:{meta['weights_sha']}@{self.server}"
        self.inner.model_id = self.model_id  # cache identity: these weights on this server
        self.batch_size = self.inner.batch_size
        self._headers = dict(self.inner._client.headers)  # the same credentials the inner backend checked and sends
        self._loaded = False
        self._load()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "backend": "tuned", "lora_name": self.lora_name, "lora_path": self.lora_path}

    # what LM and the runner use, delegated to the server backend
    @property
    def supports_score(self) -> bool:
        return self.inner.supports_score

    @property
    def scores_labels(self) -> bool:
        return self.inner.scores_labels

    @property
    def score_id(self) -> str:
        return self.inner.score_id

    def use_cache(self, cache) -> None:
        self.inner.use_cache(cache)

    def prepare_labels(self, groups: dict[str, list[str]]) -> None:
        self.inner.prepare_labels(groups)

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        return self.inner.generate(requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self.inner.score(requests)

    def close(self) -> None:
        """Unload the adapter (unless ``unload: false``) and release connections."""
        if self._loaded and self.via.unload:
            self._admin("unload_lora_adapter", {"lora_name": self.lora_name})
            self._loaded = False
        self.inner.close()

    def _load(self) -> None:
        status, text = self._admin("load_lora_adapter", {"lora_name": self.lora_name, "lora_path": self.lora_path})
        if status >= 400 and "already been loaded" not in text:  # vLLM's answer for a name it holds: reuse it
            raise TaskfitError(f"{self.server}: loading adapter {self.lora_name} from {self.lora_path} failed "
                               f"(HTTP {status}: {text[:300]}); start vLLM with --enable-lora and "
                               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and make lora_path readable by the server "
                               "(serve_via.adapter_root)", field="models[].serve_via")
        self._loaded = True

    def _admin(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST a dynamic-LoRA request; vLLM answers these in plain text, not JSON."""
        try:
            resp = httpx.post(f"{self.inner.base_url}/{path}", json=body, headers=self._headers,
                              timeout=self.via.timeout_s)
        except httpx.HTTPError as e:
            if path.startswith("unload"):
                return 0, str(e)  # the server went away: nothing left to unload
            raise TaskfitError(f"{self.server}/{path}: {type(e).__name__}: {e}", field="models[].serve_via") from e
        return resp.status_code, resp.text
