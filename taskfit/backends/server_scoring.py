"""Label scoring on OpenAI-compatible servers: three ways to score a label set, and a probe that picks one.

- ``completions``: ``/v1/completions`` with the chat-templated prompt's tokens followed by each label's tokens,
  ``echo`` and ``logprobs`` (or vLLM's ``prompt_logprobs``); the continuation tokens' log-probabilities are
  summed. This is the exact label log-likelihood, the quantity the ``hf`` backend computes (vLLM, SGLang, TGI-style
  servers). The tokens come from a local tokenizer (``models[].tokenizer``) or the server's ``/tokenize``.
- ``chat_top_logprobs``: one chat completion with ``max_tokens: 1, logprobs: true, top_logprobs: 20``; each label
  is scored by its first token (OpenAI, Ollama >= 0.12.11, llama.cpp). A label whose first token is not among the
  20 gets the 20th token's log-probability, an upper bound. Labels whose first tokens collide cannot be told apart
  this way, so such a label set falls back to the next path.
- ``choice``: decoding constrained to the label set (vLLM ``structured_outputs.choice`` or the older
  ``guided_choice``; OpenAI ``response_format`` with a JSON-schema enum). The chosen label scores 0 and the others
  ``NOT_CHOSEN``: a decision, not scores, so contextual calibration does not apply.

The probe sends a few tiny requests and never raises: every path it rejects comes with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfit.backends import Message, ScoreRequest, ScoreResult
from taskfit.errors import ModelCallError

PATHS = ("completions", "chat_top_logprobs", "choice")
# the score of a label not chosen, or of a spelling whose first token another spelling already counted: finite,
# because stored traces are JSON and JSON (and the browser reading it) has no -inf
NOT_CHOSEN = -1e4
TOP_LOGPROBS = 20  # the most OpenAI returns per position
CHOICE_FIELDS = ("structured_outputs", "guided_choice", "response_format")
# labels no model writes unprompted: a reply that is one of them shows the server constrained the decoding
_PROBE_CHOICES = ["zebra-7", "quokka-3"]
_PROBE_MESSAGES: list[Message] = [{"role": "user", "content": "Reply with one word: yes or no?"}]

Post = Callable[[str, dict[str, Any]], Any]  # (path under base_url, or "/"-rooted server path, body) -> JSON


class Refused(ModelCallError):
    """The server answered the request with a client error (4xx): the feature is missing, retrying won't help."""


@dataclass(frozen=True)
class ProbeRequest:
    """What a probe asked (its call-cache key): the model, how prompts are tokenized, the paths tried."""

    tokenizer: str | None
    order: tuple[str, ...]
    version: int = 1


@dataclass
class Probe:
    """The scoring path a server supports for a model, and why each other path is not used."""

    score_via: str  # one of PATHS, or "generate"
    reasons: dict[str, str] = field(default_factory=dict)
    choice_field: str | None = None  # how the server takes a choice list
    server_tokenize: bool = False  # completions tokenizes through the server's /tokenize
    transient: bool = False  # a path failed for a reason that may pass (timeout, 5xx): not cached

    def why(self) -> str:
        return "; ".join(f"{p}: {r}" for p, r in self.reasons.items())


# -- tokens for the completions path ---------------------------------------------------------------------
class LocalTokens:
    """Prompt and continuation tokens from a local tokenizer, exactly as the hf backend makes them."""

    def __init__(self, tokenizer: Any, chat_template: bool):
        self.tokenizer = tokenizer
        self.chat_template = chat_template and bool(getattr(tokenizer, "chat_template", None))
        self._conts: dict[str, list[int]] = {}

    def prompt(self, messages: Sequence[Message]) -> list[int]:
        from taskfit.backends.hf import prompt_text

        text = prompt_text(self.tokenizer, messages, self.chat_template)
        return self.tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"]

    def continuation(self, text: str) -> list[int]:
        if text not in self._conts:
            self._conts[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._conts[text]

    def first_token(self, text: str) -> str | None:
        ids = self.continuation(text)
        return self.tokenizer.decode(ids[:1]) if ids else None


class ServerTokens:
    """Prompt and continuation tokens from the server's ``/tokenize`` (vLLM, SGLang), chat template included."""

    def __init__(self, post: Post, model: str, chat_template: bool):
        self.post, self.model, self.chat_template = post, model, chat_template
        self._conts: dict[str, list[int]] = {}

    def prompt(self, messages: Sequence[Message]) -> list[int]:
        messages = [dict(m) for m in messages]
        if not self.chat_template:
            return self._tokens({"model": self.model, "prompt": _plain_text(messages), "add_special_tokens": True})
        prefill = bool(messages) and messages[-1]["role"] == "assistant"  # the reply's opening words
        return self._tokens({"model": self.model, "messages": messages, "add_generation_prompt": not prefill,
                             "continue_final_message": prefill, "add_special_tokens": False})

    def continuation(self, text: str) -> list[int]:
        if text not in self._conts:
            self._conts[text] = self._tokens({"model": self.model, "prompt": text, "add_special_tokens": False})
        return self._conts[text]

    def first_token(self, text: str) -> str | None:
        return None  # token strings would need /detokenize; first-token matching uses the label text instead

    def _tokens(self, body: dict[str, Any]) -> list[int]:
        data = self.post("/tokenize", body)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ModelCallError(f"POST /tokenize: reply has no `tokens` list of ids: {str(data)[:200]}")
        return tokens


def _plain_text(messages: list[dict[str, Any]]) -> str:
    """The hf backend's text for base models (no chat template): contents joined, the prefill continued."""
    prefill = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else ""
    return "\n\n".join(m["content"] for m in messages) + "\n" + prefill


# -- the three paths ---------------------------------------------------------------------------------
def score_completions(post: Post, model: str, tokens: LocalTokens | ServerTokens, req: ScoreRequest) -> ScoreResult:
    """Exact log-likelihood of each continuation: one /completions call with one prompt per continuation."""
    prompt = tokens.prompt(req.messages)
    conts = [tokens.continuation(c) for c in req.continuations]
    if any(not c for c in conts):
        raise ModelCallError(f"a continuation tokenizes to nothing: {req.continuations!r}")
    rows = [prompt + c for c in conts]
    # max_tokens 1 and the one generated token ignored, as lm-evaluation-harness does: not every server accepts 0
    data = post("completions", {"model": model, "prompt": rows, "max_tokens": 1, "temperature": 0.0,
                                "echo": True, "logprobs": 1})
    choices = _choices(data)
    if len(choices) != len(rows):
        raise ModelCallError(f"/completions returned {len(choices)} choices for {len(rows)} prompts")
    logprobs = [sum(prompt_token_logprobs(ch, row, len(prompt))) for ch, row in zip(choices, rows, strict=True)]
    return ScoreResult(logprobs=logprobs, token_counts=[len(c) for c in conts], tokens_in=len(prompt))


def prompt_token_logprobs(choice: dict[str, Any], ids: list[int], start: int) -> list[float]:
    """Log-probabilities of prompt tokens ``ids[start:]`` from an echoed completion choice: ``logprobs.
    token_logprobs`` (OpenAI legacy shape) or vLLM's ``prompt_logprobs`` ({token id: {logprob, rank, ...}})."""
    lp = (choice.get("logprobs") or {}).get("token_logprobs")
    if isinstance(lp, list) and len(lp) >= len(ids):
        values = lp[start:len(ids)]
    else:
        plp = choice.get("prompt_logprobs")
        if not (isinstance(plp, list) and len(plp) >= len(ids)):
            raise ModelCallError("the completion has no log-probabilities for its prompt tokens (the server ignored "
                                 "echo/logprobs)")
        values = []
        for pos in range(start, len(ids)):
            entry = plp[pos] or {}
            hit = entry.get(str(ids[pos]), entry.get(ids[pos]))  # JSON object keys are strings
            values.append(hit.get("logprob") if isinstance(hit, dict) else hit)
    if any(not isinstance(v, int | float) for v in values):
        raise ModelCallError(f"the completion's prompt log-probabilities are missing values: {values[:5]!r}")
    return [float(v) for v in values]


def score_top_logprobs(post: Post, model: str, req: ScoreRequest,
                       first_token: Callable[[str], str | None] | None = None) -> ScoreResult:
    """Each continuation scored by its first token's log-probability at the reply's first position."""
    data = post("chat/completions", {"model": model, "messages": [dict(m) for m in req.messages], "max_tokens": 1,
                                     "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS})
    tops = top_logprobs(_choices(data)[0])
    floor = min(tops.values())  # a token outside the top 20 is at most this likely
    used: set[str] = set()
    out = []
    for c in req.continuations:
        tok = first_token(c) if first_token else None
        if tok is None:  # no tokenizer: the longest top token that starts the label
            starts = [t for t in tops if t and c.startswith(t)]
            tok = max(starts, key=len) if starts else None
        if tok is not None and tok in used:
            out.append(NOT_CHOSEN)  # another spelling already counted this token; counting it twice would inflate it
        else:
            out.append(tops.get(tok, floor) if tok is not None else floor)
            if tok is not None:
                used.add(tok)
    usage = data.get("usage") or {}
    return ScoreResult(logprobs=out, token_counts=[1] * len(out), tokens_in=int(usage.get("prompt_tokens") or 0))


def top_logprobs(choice: dict[str, Any]) -> dict[str, float]:
    """{token text: log-probability} of the first generated position (OpenAI chat ``logprobs.content`` shape)."""
    content = (choice.get("logprobs") or {}).get("content")
    if not (isinstance(content, list) and content and isinstance(content[0], dict)):
        raise ModelCallError("the chat reply has no logprobs.content (the server ignored logprobs)")
    tops = content[0].get("top_logprobs")
    if not (isinstance(tops, list) and tops):
        raise ModelCallError("the chat reply has no top_logprobs at its first token (the server ignored top_logprobs)")
    out: dict[str, float] = {}
    for t in tops:
        if isinstance(t, dict) and isinstance(t.get("token"), str) and isinstance(t.get("logprob"), int | float):
            out.setdefault(t["token"], float(t["logprob"]))
    if not out:
        raise ModelCallError(f"top_logprobs entries lack token/logprob: {str(tops)[:200]}")
    return out


def colliding_labels(groups: dict[str, list[str]], first_token: Callable[[str], str | None] | None) -> list[str]:
    """Pairs of labels that a first token cannot tell apart: same first token (with a tokenizer), or one label's
    text the start of another's (without one)."""
    found = []
    labels = list(groups)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            for ca in groups[a]:
                for cb in groups[b]:
                    if first_token:
                        clash = first_token(ca) is not None and first_token(ca) == first_token(cb)
                    else:
                        clash = ca.startswith(cb) or cb.startswith(ca)
                    if clash:
                        found.append(f"{a!r}/{b!r}")
                        break
                else:
                    continue
                break
    return found


def score_choice(post: Post, model: str, choice_field: str, req: ScoreRequest) -> ScoreResult:
    """The label the server picks under constrained decoding scores 0, every other ``NOT_CHOSEN``."""
    options = list(dict.fromkeys(c.strip() for c in req.continuations))
    body = {"model": model, "messages": [dict(m) for m in req.messages], "temperature": 0.0,
            "max_tokens": 16 + 2 * max(len(o) for o in options)}
    body.update(choice_body(choice_field, options))
    data = post("chat/completions", body)
    picked = chosen(_choices(data)[0], choice_field)
    if picked not in options:
        raise ModelCallError(f"constrained decoding returned {picked!r}, not one of {options}")
    seen = False
    out = []
    for c in req.continuations:
        hit = c.strip() == picked and not seen
        seen = seen or hit
        out.append(0.0 if hit else NOT_CHOSEN)
    usage = data.get("usage") or {}
    return ScoreResult(logprobs=out, token_counts=[1] * len(out), tokens_in=int(usage.get("prompt_tokens") or 0))


def choice_body(choice_field: str, options: list[str]) -> dict[str, Any]:
    """The request fields that constrain a chat reply to ``options``, in the server's dialect."""
    if choice_field == "structured_outputs":
        return {"structured_outputs": {"choice": options}}
    if choice_field == "guided_choice":
        return {"guided_choice": options}
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": options}},
              "required": ["label"], "additionalProperties": False}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "label", "strict": True,
                                                                        "schema": schema}}}


def chosen(choice: dict[str, Any], choice_field: str) -> str:
    text = ((choice.get("message") or {}).get("content") or "").strip()
    if choice_field != "response_format":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return str(value.get("label")) if isinstance(value, dict) else text


def _choices(data: Any) -> list[dict[str, Any]]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not (isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices)):
        raise ModelCallError(f"response has no `choices` list: {str(data)[:200]}")
    return sorted(choices, key=lambda c: c.get("index", 0))


# -- the probe ---------------------------------------------------------------------------------------
def probe(post: Post, model: str, order: Sequence[str], tokens: Callable[[], LocalTokens | ServerTokens | None]
          ) -> Probe:
    """Try each path in ``order`` with a tiny request; the first that works is used. Never raises."""
    result = Probe(score_via="generate")
    for path in order:
        try:
            if path == "completions":
                tok = tokens()
                if tok is None:
                    raise Refused("the prompt's tokens are unknown: name a local tokenizer in models[].tokenizer, "
                                  "or use a server that offers /tokenize")
                result.server_tokenize = isinstance(tok, ServerTokens)
                req = ScoreRequest(_PROBE_MESSAGES, (" yes",))
                score_completions(post, model, tok, req)
            elif path == "chat_top_logprobs":
                score_top_logprobs(post, model, ScoreRequest(_PROBE_MESSAGES, ("yes", "no")))
            elif path == "choice":
                result.choice_field = _probe_choice(post, model, result)
                if result.choice_field is None:
                    continue
            result.score_via = path
            result.reasons.pop(path, None)
            return result
        except Refused as e:
            result.reasons[path] = str(e)
        except ModelCallError as e:
            result.reasons[path] = str(e)
            result.transient = result.transient or _maybe_transient(str(e))
        except Exception as e:  # a malformed reply must not stop the run: the path is just not used
            result.reasons[path] = f"unexpected {type(e).__name__}: {e}"
    return result


def _probe_choice(post: Post, model: str, result: Probe) -> str | None:
    failures = []
    req = ScoreRequest(_PROBE_MESSAGES, tuple(_PROBE_CHOICES))
    for name in CHOICE_FIELDS:
        try:
            score_choice(post, model, name, req)
            return name
        except ModelCallError as e:
            failures.append(f"{name}: {e}")
            if not isinstance(e, Refused):
                result.transient = result.transient or _maybe_transient(str(e))
    result.reasons["choice"] = "; ".join(failures)
    return None


def _maybe_transient(message: str) -> bool:
    """Timeouts, refused connections and 5xx may pass; a reply of the wrong shape will not."""
    return any(s in message for s in ("timed out", "connection failed", "HTTP 5", "HTTP 429"))
