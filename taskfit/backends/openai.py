"""Backend for any OpenAI-compatible chat server: vLLM, Ollama, llama.cpp server, TGI, OpenAI.

Generation only: ``supports_score`` is False because chat-completions servers do not portably return
log-likelihoods of *given* text (the prompt's ``logprobs``/``echo`` options are missing or differ
between vLLM, Ollama, llama.cpp and OpenAI), so label scoring falls back to generate-and-parse.

Native tool calling: a request's ``tools`` are sent as the ``tools`` field and the reply's ``tool_calls``
come back parsed; assistant messages with ``tool_calls`` and ``tool`` messages are sent exactly as given.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult
from taskfit.credentials import redact, url_problem
from taskfit.errors import ModelCallError, TaskfitError
from taskfit.taskfile import ModelSpec

_EXCERPT_CHARS = 300


def create(spec: ModelSpec) -> OpenAIBackend:
    """Build the backend from a task file's model entry; raises TaskfitError on bad settings."""
    return OpenAIBackend(spec)


class OpenAIBackend:
    """Chat completions over HTTP with bounded concurrency and retries; failures become error results."""

    supports_score = False
    supports_tools = True
    local = False

    def __init__(self, spec: ModelSpec, *, backoff_s: float = 0.5, max_backoff_s: float = 60.0):
        if not spec.base_url:
            raise TaskfitError("the openai backend needs models[].base_url, e.g. http://127.0.0.1:8000/v1",
                               field="models[].base_url")
        if not spec.base_url.startswith(("http://", "https://")):
            raise TaskfitError(f"models[].base_url must start with http:// or https:// "
                               f"(got {spec.base_url!r})", field="models[].base_url")
        if problem := url_problem(spec.base_url):
            raise TaskfitError(f"models[].base_url {problem}", field="models[].base_url")
        if not spec.model:
            raise TaskfitError("the openai backend needs models[].model, the model name sent to the server",
                               field="models[].model")
        api_key = None
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env)
            if not api_key:
                raise TaskfitError(f"models[].api_key_env names {spec.api_key_env!r}, but that environment "
                                   "variable is not set", field="models[].api_key_env")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        for header, env in spec.headers_env.items():
            if not os.environ.get(env):
                raise TaskfitError(f"models[].headers_env[{header!r}] names {env!r}, but that environment "
                                   "variable is not set", field="models[].headers_env")
            headers[header] = os.environ[env]
        self._secrets = [v for v in (api_key, *headers.values()) if v]  # masked in error texts: servers echo them
        self.spec = spec
        self.batch_size = spec.concurrency * 4  # keep every connection busy between cache commits
        self.base_url = spec.base_url.rstrip("/")
        self.model = spec.model
        self.url = f"{self.base_url}/chat/completions"
        self.model_id = f"openai:{_public_url(self.base_url)}:{self.model}"
        self._shown_url = f"{_public_url(self.base_url)}/chat/completions"  # for error messages
        self.backoff_s = backoff_s  # base delay; attempt k waits about backoff_s * 2**k
        self.max_backoff_s = max_backoff_s  # cap on any single wait, Retry-After included
        self._rng = random.Random()  # jitter only; it must not share or disturb the seeded global RNG
        # One pooled client for all threads; the pool is sized so no worker ever waits on a connection.
        self._client = httpx.Client(
            timeout=spec.timeout_s, headers=headers,
            limits=httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency))

    def describe(self) -> dict[str, Any]:
        """Settings worth recording with a run; the API key itself is never included."""
        s = self.spec
        return {"backend": "openai", "base_url": _public_url(self.base_url), "model": self.model,
                "api_key_env": s.api_key_env, "headers_env": s.headers_env, "concurrency": s.concurrency,
                "timeout_s": s.timeout_s, "max_retries": s.max_retries, "backoff_s": self.backoff_s,
                "price_in_per_1m": s.price_in_per_1m, "price_out_per_1m": s.price_out_per_1m}

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Run every request (at most ``concurrency`` in flight); results come back in input order."""
        if not requests:
            return []
        workers = min(self.spec.concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskfit-openai") as pool:
            return list(pool.map(self._generate_one, requests))

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Not available: see the module docstring; callers check ``supports_score`` first."""
        raise NotImplementedError(
            "the openai backend cannot score continuations (chat servers do not portably return prompt "
            "log-likelihoods); check supports_score and use output_mode: generate")

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        start = time.perf_counter()
        try:
            data = self._post(_payload(self.model, req))
            result = _parse(data)
        except ModelCallError as e:
            result = GenerateResult(texts=[], error=redact(str(e), self._secrets))
        except Exception as e:  # one bad request must not sink the rest of the batch
            result = GenerateResult(texts=[], error=redact(
                f"POST {self._shown_url}: unexpected {type(e).__name__}: {e}", self._secrets))
        result.latency_ms = (time.perf_counter() - start) * 1000.0
        return result

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns the decoded JSON body or raises ModelCallError."""
        where = f"POST {self._shown_url}"
        attempts = self.spec.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            tried = f"after {attempt + 1} attempt{'s' if attempt else ''}"
            try:
                resp = self._client.post(self.url, json=payload)
            except httpx.TimeoutException as e:
                if last:
                    raise ModelCallError(f"{where}: timed out {tried} "
                                         f"(timeout_s={self.spec.timeout_s:g}; {type(e).__name__})") from e
                self._sleep(attempt, None)
                continue
            except httpx.TransportError as e:
                if last:
                    raise ModelCallError(f"{where}: connection failed {tried} "
                                         f"({type(e).__name__}: {e})") from e
                self._sleep(attempt, None)
                continue
            if resp.is_success:
                try:
                    return resp.json()
                except ValueError as e:
                    raise ModelCallError(f"{where}: response is not JSON: {_excerpt(resp.text)}") from e
            if _retryable(resp.status_code) and not last:
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            raise ModelCallError(f"{where}: HTTP {resp.status_code} {tried}: {_excerpt(resp.text)}")
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        """Wait before retry ``attempt + 1``: the server's numeric Retry-After, else jittered backoff."""
        delay = _seconds(retry_after)
        if delay is None:
            base = self.backoff_s * 2**attempt
            # Equal jitter: keeps a floor on the wait while spreading out workers that failed together.
            delay = base / 2 + self._rng.uniform(0, base / 2)
        time.sleep(min(max(delay, 0.0), self.max_backoff_s))


def _payload(model: str, req: GenerateRequest) -> dict[str, Any]:
    """The chat-completions body; ``stop`` is left out when empty since some servers reject []."""
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in req.messages],
                            "max_tokens": req.max_tokens, "temperature": req.temperature,
                            "n": req.n, "seed": req.seed}
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:  # left out when empty: some servers reject "tools": [] as well
        body["tools"] = [dict(t) for t in req.tools]
    return body


def _parse(data: Any) -> GenerateResult:
    """Texts (one per choice, in index order) and token counts from a chat-completions response."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise ModelCallError(f"response has no `choices` list: {_excerpt(str(data))}")
    choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    texts = [((c.get("message") or {}).get("content") or "") if isinstance(c, dict) else "" for c in choices]
    usage = data.get("usage") or {}
    first = (choices[0].get("message") or {}) if choices and isinstance(choices[0], dict) else {}
    return GenerateResult(texts=texts, tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0),
                          tool_calls=_tool_calls(first.get("tool_calls")))


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    """``message.tool_calls`` as {"id", "name", "arguments"}; arguments arrive as a JSON string."""
    calls = []
    for i, call in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                pass  # kept as the raw string: the caller reports it to the model instead of failing the call
        # some servers omit the id; the tool message that answers the call must still name one
        calls.append({"id": call.get("id") or f"call_{i}", "name": fn.get("name") or "",
                      "arguments": args if args is not None else {}})
    return calls


def _retryable(status: int) -> bool:
    """Rate limits and server errors may pass; other 4xx mean the request itself is wrong."""
    return status == 429 or 500 <= status < 600


def _seconds(retry_after: str | None) -> float | None:
    """A numeric Retry-After in seconds; None for absent or HTTP-date values (backoff is used then)."""
    if retry_after is None:
        return None
    try:
        value = float(retry_after.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def _public_url(url: str) -> str:
    """``url`` without user:password, so credentials never reach cache keys or run records."""
    u = httpx.URL(url)
    if not (u.username or u.password):
        return url
    return str(u.copy_with(username=None, password=None)).rstrip("/")
