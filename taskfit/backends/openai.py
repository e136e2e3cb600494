"""Backend for any OpenAI-compatible server: vLLM, SGLang, TGI, Ollama, llama.cpp server, OpenAI.

Generation goes through chat completions. Label scoring takes whichever of three paths the server supports
(``taskfit.backends.server_scoring``: ``completions`` for exact label log-likelihood, ``chat_top_logprobs``,
``choice``), found by probing the server once per model (the answer is kept in the call cache) or named in the
task file (``models[].score_via``); a server with none falls back to generate-and-parse, and the run records why.

Native tool calling: a request's ``tools`` are sent as the ``tools`` field and the reply's ``tool_calls``
come back parsed; assistant messages with ``tool_calls`` and ``tool`` messages are sent exactly as given.

Replicas: ``base_url`` may list several servers of the same model. Each request goes to the least busy one with
a free slot (``concurrency`` per replica); one that fails there after its retries moves to another replica.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, backend_options
from taskfit.backends import server_scoring as ss
from taskfit.backends.facts import ModelFacts, chars
from taskfit.credentials import check_url, redact
from taskfit.errors import ModelCallError, TaskfitError
from taskfit.taskfile import ModelSpec

_EXCERPT_CHARS = 300
REPLICA_REST_S = 30.0  # a replica that failed a request gets no new one for this long while others are up


class Options(BaseModel):
    """``backend: openai``: any OpenAI-compatible chat completions server."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | list[str] | None = Field(
        None, description="Server URL, e.g. http://127.0.0.1:8000/v1, or a list of replicas serving the same "
        "model (requests are spread over them, `concurrency` each; a request that fails on one moves to another; "
        "the first URL names the model in the call cache).")
    model: str | None = Field(None, description="Model name sent to the server.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers, each read from the named environment "
        "variable, e.g. {api-key: AZURE_OPENAI_KEY}; runs record the variable names, never the values.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries on 429/5xx/timeouts, with exponential backoff.")
    score_via: Literal["auto", "completions", "chat_top_logprobs", "choice", "generate"] = Field(
        "auto", description="How labels are scored on the server; auto probes it once per model "
        "(completions: exact log-likelihood; chat_top_logprobs: first token; choice: constrained decoding).")
    tokenizer: str | None = Field(None, description="Local tokenizer folder of the served model, for the "
                                  "chat template and tokens of score_via: completions (else the server's /tokenize).")
    chat_template: bool = Field(True, description="With `tokenizer`: apply its chat template (false for base "
                                "models).")
    path: str | None = Field(None, description="tuned:<id> of the provider fine-tuning run that made this model "
                             "(links its leaderboard row to the training record).")

    def label(self) -> str:
        return self.model or "openai"

    @property
    def urls(self) -> list[str]:
        """The replicas' URLs, without trailing slashes; [] when none is given."""
        given = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        return [u.rstrip("/") for u in given]


def _replica_urls(o: Options) -> list[str]:
    """Every replica URL through the credential check; the list (a duplicate would double a replica's load)."""
    urls = o.urls
    for i, url in enumerate(urls):
        check_url(url, "models[].base_url" if isinstance(o.base_url, str) else f"models[].base_url[{i}]")
    if len(set(urls)) != len(urls):
        raise TaskfitError("models[].base_url lists the same URL twice", field="models[].base_url")
    return urls


def _model_id(urls: list[str], model: str | None) -> str:
    """The model's identity in the call cache: the first URL, whichever replica answers. Replicas serve the same
    model, so a cached answer holds for all of them; a study that grows from one server to several keeps its
    cache as long as that server stays first."""
    return f"openai:{_public_url(urls[0] if urls else '')}:{model}"


def create(spec: ModelSpec) -> OpenAIBackend:
    """Build the backend from a task file's model entry; raises TaskfitError on bad settings."""
    return OpenAIBackend(spec)


def facts(spec: ModelSpec, cache: Any) -> ModelFacts:
    """The model's identity without a request; prompt tokens approximated from characters; whether it scores
    labels as the probe found (kept in the call cache by the first run), else as the task file names the path,
    else unknown (None) until the first call probes the server."""
    o = backend_options(spec)
    # the id below is a cache key and is printed by the dry run
    model_id = _model_id(_replica_urls(o), o.model)
    order = _paths(o)
    if not order:
        return ModelFacts(model_id, chars, True, can_score=False)
    key = _probe_key(model_id, o, order)
    hit = cache.get_many([key]).get(key) if cache is not None else None
    if hit:
        probe = ss.Probe(**hit)
        return ModelFacts(model_id, chars, True, can_score=probe.score_via != "generate",
                          score_id=_score_id(model_id, o, probe))
    return ModelFacts(model_id, chars, True, can_score=True if o.score_via != "auto" else None)


def _paths(o: Options) -> tuple[str, ...]:
    """The scoring paths to try: all of them in turn (auto), the one the task file names, or none (generate)."""
    return tuple(ss.PATHS) if o.score_via == "auto" else (() if o.score_via == "generate" else (o.score_via,))


def _score_id(model_id: str, o: Options, p: ss.Probe) -> str:
    """Cache identity of score calls: the path (and its tokens' source) changes the numbers returned."""
    extra = {"completions": f":{o.tokenizer or 'server-tokenize'}", "choice": f":{p.choice_field}"}
    return f"{model_id}:{p.score_via}{extra.get(p.score_via, '')}"


def _probe_key(model_id: str, o: Options, order: tuple[str, ...]) -> str:
    """The call-cache key of a probe's answer: what the backend stores, and what a dry run looks up."""
    from taskfit.cache import call_key

    return call_key(model_id, "probe", ss.ProbeRequest(tokenizer=o.tokenizer, order=order))


@dataclass(eq=False)
class Replica:
    """One server behind the model, with its own connections and how busy it is."""

    base_url: str
    client: httpx.Client
    in_flight: int = 0
    sent: int = 0  # requests handed to it: ties go to the one that got fewer, so idle replicas share the load
    down_until: float = 0.0  # time.monotonic() until which it is passed over after a failed request


class OpenAIBackend:
    """Chat completions over HTTP with bounded concurrency and retries; failures become error results."""

    supports_tools = True
    local = False

    def __init__(self, spec: ModelSpec, *, backoff_s: float = 0.5, max_backoff_s: float = 60.0):
        self.options = o = backend_options(spec)
        if not o.urls:
            raise TaskfitError("the openai backend needs models[].base_url, e.g. http://127.0.0.1:8000/v1",
                               field="models[].base_url")
        urls = _replica_urls(o)
        if not o.model:
            raise TaskfitError("the openai backend needs models[].model, the model name sent to the server",
                               field="models[].model")
        if o.tokenizer and not Path(o.tokenizer).expanduser().exists():
            raise TaskfitError(f"models[].tokenizer {o.tokenizer!r} does not exist (a local folder with the served "
                               "model's tokenizer files)", field="models[].tokenizer")
        api_key = None
        if o.api_key_env:
            api_key = os.environ.get(o.api_key_env)
            if not api_key:
                raise TaskfitError(f"models[].api_key_env names {o.api_key_env!r}, but that environment "
                                   "variable is not set", field="models[].api_key_env")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        for header, env in o.headers_env.items():
            if not os.environ.get(env):
                raise TaskfitError(f"models[].headers_env[{header!r}] names {env!r}, but that environment "
                                   "variable is not set", field="models[].headers_env")
            headers[header] = os.environ[env]
        self._secrets = [v for v in (api_key, *headers.values()) if v]  # masked in error texts: servers echo them
        self.spec = spec
        self.batch_size = o.concurrency * len(urls) * 4  # keep every connection busy between cache commits
        self.base_url = urls[0]
        self.model = o.model
        self.model_id = _model_id(urls, self.model)
        self._shown_url = f"{_public_url(self.base_url)}/chat/completions"  # for error messages
        self._probe: ss.Probe | None = None  # the scoring path, found on first need
        self._probe_cached = False
        self._cache = None
        self._tokens: ss.LocalTokens | ss.ServerTokens | None = None
        self.backoff_s = backoff_s  # base delay; attempt k waits about backoff_s * 2**k
        self.max_backoff_s = max_backoff_s  # cap on any single wait, Retry-After included
        self._rng = random.Random()  # jitter only; it must not share or disturb the seeded global RNG
        # one pooled client per replica, for all threads; sized so no worker ever waits on a connection
        self._replicas = [Replica(url, httpx.Client(
            timeout=o.timeout_s, headers=headers,
            limits=httpx.Limits(max_connections=o.concurrency, max_keepalive_connections=o.concurrency)))
            for url in urls]
        self._free = threading.Condition()  # a replica's slot came free
        self._client = self._replicas[0].client  # the first server's: what an adapter server is asked

    def describe(self) -> dict[str, Any]:
        """Settings worth recording with a run; the API key itself is never included."""
        s, o = self.spec, self.options
        p = self._probe
        urls = [_public_url(r.base_url) for r in self._replicas]
        return {"backend": "openai", "base_url": urls[0] if len(urls) == 1 else urls, "model": self.model,
                "api_key_env": o.api_key_env, "headers_env": o.headers_env, "concurrency": o.concurrency,
                "timeout_s": o.timeout_s, "max_retries": o.max_retries, "backoff_s": self.backoff_s,
                "price_in_per_1m": s.price_in_per_1m, "price_out_per_1m": s.price_out_per_1m,
                "server": ", ".join(urls), "tokenizer": o.tokenizer,
                "score_via": p.score_via if p else None, "score_via_reason": redact(p.why(), self._secrets) if p else None,
                "choice_field": p.choice_field if p else None}

    # -- label scoring -------------------------------------------------------------------------------
    def use_cache(self, cache) -> None:
        """Keep the probed scoring path in the call cache, so a server is probed once per model, not per run."""
        self._cache = cache
        if self._probe is not None and not self._probe_cached:
            self._store_probe()

    @property
    def supports_score(self) -> bool:
        return self.probe().score_via != "generate"

    @property
    def scores_labels(self) -> bool:
        """Constrained choice returns a decision, not scores: contextual calibration does not apply to it."""
        return self.probe().score_via == "choice"

    @property
    def score_id(self) -> str:
        """Cache identity of score calls: the path (and its tokens' source) changes the numbers returned."""
        return _score_id(self.model_id, self.options, self.probe())

    def probe(self) -> ss.Probe:
        """The scoring path: ``score_via`` from the task file, checked; else the first that works on the server."""
        if self._probe is None:
            via = self.options.score_via
            order = self._order()
            key = self._probe_key(order)
            hit = self._cache.get_many([key]).get(key) if self._cache is not None else None
            if hit:
                self._probe, self._probe_cached = ss.Probe(**hit), True
            else:
                self._probe = ss.probe(self._post_to, self.model, order, self._token_source)
                if via == "generate":
                    self._probe.reasons["generate"] = "score_via: generate in the task file"
                if self._cache is not None:
                    self._store_probe()
        return self._probe

    def prepare_labels(self, groups: dict[str, list[str]]) -> None:
        """Check the task's label set against the path: labels whose first tokens collide cannot be scored by
        ``chat_top_logprobs``; such a set moves on to ``choice`` where the server has it, else to generation."""
        p = self.probe()
        if p.score_via != "chat_top_logprobs":
            return
        first = self._token_source_local()
        clashes = ss.colliding_labels(groups, first.first_token if first else None)
        if not clashes:
            return
        reason = f"labels {', '.join(clashes)} share their first token"
        later = ss.PATHS[ss.PATHS.index("chat_top_logprobs") + 1:] if self.options.score_via == "auto" else ()
        moved = ss.probe(self._post_to, self.model, later, self._token_source)
        moved.reasons = {**p.reasons, "chat_top_logprobs": reason, **moved.reasons}
        self._probe = moved  # for this label set only: not stored as the model's probe

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score every request by the probed path (at most ``concurrency`` in flight), in input order."""
        if not self.supports_score:
            raise NotImplementedError(f"{self.model} on {_public_url(self.base_url)} cannot score labels "
                                      f"({self.probe().why()}); check supports_score first")
        if not requests:
            return []
        workers = min(self.options.concurrency * len(self._replicas), len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskfit-openai") as pool:
            return list(pool.map(self._score_one, requests))

    def _score_one(self, req: ScoreRequest) -> ScoreResult:
        start = time.perf_counter()
        p = self.probe()
        try:
            if p.score_via == "completions":
                result = ss.score_completions(self._post_to, self.model, self._token_source(), req)
            elif p.score_via == "chat_top_logprobs":
                local = self._token_source_local()
                result = ss.score_top_logprobs(self._post_to, self.model, req, local.first_token if local else None)
            else:
                result = ss.score_choice(self._post_to, self.model, p.choice_field or "", req)
        except ModelCallError as e:
            result = ScoreResult(logprobs=[], error=redact(f"{p.score_via}: {e}", self._secrets))
        except Exception as e:  # one bad request must not sink the rest of the batch
            result = ScoreResult(logprobs=[], error=redact(f"{p.score_via}: unexpected {type(e).__name__}: {e}",
                                                           self._secrets))
        result.latency_ms = (time.perf_counter() - start) * 1000.0
        return result

    def _order(self) -> tuple[str, ...]:
        return _paths(self.options)

    def _probe_key(self, order: tuple[str, ...]) -> str:
        return _probe_key(self.model_id, self.options, order)

    def _store_probe(self) -> None:
        from dataclasses import asdict

        p = self._probe
        if p is None or p.transient:  # a server that was down is probed again next run
            return
        order = self._order()
        self._cache.put_many([(self._probe_key(order), self.model_id, "probe",
                               ss.ProbeRequest(tokenizer=self.options.tokenizer, order=order), asdict(p))])
        self._probe_cached = True

    def _token_source_local(self) -> ss.LocalTokens | None:
        if self._tokens is None and self.options.tokenizer:
            from transformers import AutoTokenizer

            folder = Path(self.options.tokenizer).expanduser()
            self._tokens = ss.LocalTokens(AutoTokenizer.from_pretrained(folder), self.options.chat_template)
        return self._tokens if isinstance(self._tokens, ss.LocalTokens) else None

    def _token_source(self) -> ss.LocalTokens | ss.ServerTokens:
        """A local tokenizer when the model entry names one, else the server's /tokenize."""
        if self._tokens is None:
            self._tokens = self._token_source_local() or ss.ServerTokens(self._post_to, self.model,
                                                                         self.options.chat_template)
        return self._tokens

    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """Run every request (at most ``concurrency`` in flight); results come back in input order."""
        if not requests:
            return []
        workers = min(self.options.concurrency * len(self._replicas), len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskfit-openai") as pool:
            return list(pool.map(self._generate_one, requests))

    def close(self) -> None:
        """Release pooled connections."""
        for r in self._replicas:
            r.client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _generate_one(self, req: GenerateRequest) -> GenerateResult:
        start = time.perf_counter()
        try:
            data = self._post_to("chat/completions", _payload(self.model, req))
            result = _parse(data)
        except ModelCallError as e:
            result = GenerateResult(texts=[], error=redact(str(e), self._secrets))
        except Exception as e:  # one bad request must not sink the rest of the batch
            result = GenerateResult(texts=[], error=redact(
                f"POST {self._shown_url}: unexpected {type(e).__name__}: {e}", self._secrets))
        result.latency_ms = (time.perf_counter() - start) * 1000.0
        return result

    def _post_to(self, path: str, payload: dict[str, Any]) -> Any:
        """POST to ``path`` under base_url (``completions``), or, for "/"-rooted paths (``/tokenize``), under the
        server's root (base_url without its trailing /v1), on the least busy replica; a request that fails
        there after its retries (no connection, time-outs, 5xx) moves to the next replica."""
        tried: list[Replica] = []
        while True:
            replica = self._acquire(tried)
            root = replica.base_url.removesuffix("/v1") if path.startswith("/") else replica.base_url + "/"
            try:
                return self._post(replica.client, payload, url=root + path, shown=_public_url(root) + path)
            except ss.Refused:  # the request itself is wrong: another replica would refuse it too
                raise
            except ModelCallError:
                replica.down_until = time.monotonic() + REPLICA_REST_S
                tried.append(replica)
                if len(tried) == len(self._replicas):
                    raise
            finally:
                self._release(replica)

    def _acquire(self, tried: list[Replica]) -> Replica:
        """A replica not ``tried`` yet with a free slot (``concurrency`` each): the least busy of those that
        have not failed lately (if all have, any), waiting for a slot when all are busy."""
        with self._free:
            while True:
                left = [r for r in self._replicas if r not in tried]
                now = time.monotonic()
                up = [r for r in left if r.down_until <= now] or left
                free = [r for r in up if r.in_flight < self.options.concurrency]
                if free:
                    replica = min(free, key=lambda r: (r.in_flight, r.sent))
                    replica.in_flight += 1
                    replica.sent += 1
                    return replica
                self._free.wait()

    def _release(self, replica: Replica) -> None:
        with self._free:
            replica.in_flight -= 1
            self._free.notify()

    def _post(self, client: httpx.Client, payload: dict[str, Any], *, url: str, shown: str) -> Any:
        """POST with retries; returns the decoded JSON body or raises ModelCallError (``Refused`` for a 4xx)."""
        where = f"POST {shown}"
        attempts = self.options.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            tried = f"after {attempt + 1} attempt{'s' if attempt else ''}"
            try:
                resp = client.post(url, json=payload)
            except httpx.TimeoutException as e:
                if last:
                    raise ModelCallError(f"{where}: timed out {tried} "
                                         f"(timeout_s={self.options.timeout_s:g}; {type(e).__name__})") from e
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
            error = ss.Refused if 400 <= resp.status_code < 500 and resp.status_code != 429 else ModelCallError
            raise error(f"{where}: HTTP {resp.status_code} {tried}: {_excerpt(resp.text)}")
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
