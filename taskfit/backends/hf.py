"""Local models with transformers, on CPU or GPU: batched generation and label log-likelihood scoring.

Scoring runs the prompt once per example (single-token continuations are read off the last position; longer
ones follow the prompt as a token trie, each distinct label prefix computed once: label_trie.py) and reuses
the KV cache of the token prefix that a batch shares (the system prompt and a fixed few-shot block), so that
prefix is computed once per run instead of once per example.
Latency per request is the batch's wall time divided by its size (throughput cost, not time-to-first-token).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from taskfit.backends import (
    GenerateRequest,
    GenerateResult,
    Message,
    ScoreRequest,
    ScoreResult,
    backend_options,
    label_trie,
)
from taskfit.backends.facts import ModelFacts, chars
from taskfit.calibration import measure_decode, measure_forward
from taskfit.errors import TaskfitError
from taskfit.taskfile import ModelSpec

if TYPE_CHECKING:
    from taskfit.cache import CallCache

MIN_SHARED_PREFIX = 16  # below this many tokens a shared-prefix cache costs more than it saves
# rows x prompt tokens in one pass of label continuations: the shared prompt's keys and values are copied
# once per row in that pass (77 intent names after a 900-token few-shot prompt took 18 GB in one pass of 64)
SCORE_PASS_TOKENS = 16_384
# queries x keys in one pass of a label trie (batch 1, no copy of the prompt per label): the attention scores,
# heads x cells floats, stay near 150 MB for SmolLM2's 9 heads (77 intents after 900 tokens need 0.2 M cells)
SCORE_PASS_CELLS = 1 << 22


class Options(BaseModel):
    """``backend: hf``: a local model run with transformers."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="Local model folder, .gguf file or folder holding one .gguf; "
                                               "'bundled' for SmolLM2-135M.")
    gguf_file: str | None = Field(None, description="GGUF file name inside `path`.")
    device: str = Field("auto", description="cpu, cuda, cuda:1 or auto.")
    dtype: str = Field("auto", description="float32, bfloat16, float16 or auto (fp32 on CPU).")
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")
    chat_template: bool = Field(True, description="Apply the tokenizer's chat template (false for base models).")

    def label(self) -> str:
        if self.path in (None, "bundled"):
            return "smollm2-135m"
        return Path(self.gguf_file or self.path).stem


def create(spec: ModelSpec) -> HFBackend:
    from taskfit import bundled

    o = backend_options(spec)
    if o.path in (None, "bundled"):
        folder = bundled.smollm2_dir()
    else:
        p = Path(o.path).expanduser()
        if o.gguf_file:
            p = p / o.gguf_file
        if not p.exists():
            raise TaskfitError(f"model path {str(p)!r} does not exist", field="models[].path")
        folder = bundled.model_folder(p)
    return HFBackend(folder, spec)


def prompt_text(tokenizer, messages: list[Message] | tuple[Message, ...], chat_template: bool) -> str:
    """The exact text a model sees for ``messages``: the chat template with the generation prompt (a final
    assistant message is the reply's opening words, continued), or plain text for base models. Training
    (taskfit.tuning) renders its prompts with this same function."""
    messages = list(messages)
    prefill = ""
    if messages and messages[-1]["role"] == "assistant":  # the reply's opening words, to be continued
        prefill = messages.pop()["content"]
    if chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
    # base models: plain concatenation
    return "\n\n".join(m["content"] for m in messages) + "\n" + prefill


def facts(spec: ModelSpec, cache: CallCache) -> ModelFacts:
    """The model's tokenizer (the weights stay on disk) and the identity the cache last saw it under; a GGUF
    file, which would have to be converted first, is counted by characters with no known identity."""
    from sqlalchemy import text
    from transformers import AutoTokenizer

    from taskfit import bundled

    o = backend_options(spec)
    if o.path in (None, "bundled"):
        folder = bundled.smollm2_dir()
    else:
        folder = Path(o.path).expanduser() / (o.gguf_file or "")
        if not folder.exists():  # as `create` says; never a hub name to download
            raise TaskfitError(f"model path {str(folder)!r} does not exist", field="models[].path")
        if bundled.gguf_file(folder) is not None:  # counted by characters until it is converted
            return ModelFacts(None, chars, False)
    tok = AutoTokenizer.from_pretrained(folder)
    chat = o.chat_template and bool(tok.chat_template)

    def count(messages) -> int:
        return len(tok(prompt_text(tok, list(messages), chat), add_special_tokens=not chat)["input_ids"])

    # the loaded model's id adds its chat template, dtype and device: take the latest one the cache has seen
    prefix = f"hf:{spec.label()}:{_weights_fingerprint(folder)}:"
    with cache.eng.connect() as conn:
        seen = conn.execute(text("SELECT model_id FROM calls WHERE model_id LIKE :p ORDER BY created DESC LIMIT 1"),
                            {"p": prefix + "%"}).scalar()
    return ModelFacts(seen, count, False)


def _weights_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode() + str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


class HFBackend:
    local = True
    supports_score = True
    supports_tools = False

    def __init__(self, folder: Path, spec: ModelSpec, *, model=None, tokenizer=None, model_id: str | None = None,
                 plain_forward: bool = False):
        """Load the model in ``folder``, or wrap an already loaded ``model``/``tokenizer`` (tuned models);
        ``plain_forward`` scores through the whole model's forward (PEFT prompt/prefix tuning injects virtual
        tokens there, which the decoder-only fast path would skip)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.spec = spec
        self.options = o = backend_options(spec)
        self.folder = folder
        device = o.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = o.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(self.device)
        self.model = model
        self.model.eval()
        self.plain_forward = plain_forward
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.use_chat_template = o.chat_template and bool(self.tokenizer.chat_template)
        # everything that changes what the model returns for the same messages is part of the cache identity
        template = "chat" if self.use_chat_template else "plain"
        identity = model_id or f"hf:{spec.label()}:{_weights_fingerprint(folder)}"
        self.model_id = f"{identity}:{template}:{self.model.dtype}:{self.device.type}"
        self.batch_size = o.batch_size
        self._prefix_cache: dict[tuple[int, ...], Any] = {}

    def describe(self) -> dict[str, Any]:
        return {"backend": "hf", "folder": str(self.folder), "device": str(self.device),
                "dtype": str(self.model.dtype), "chat_template": self.use_chat_template,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    def calibrate(self, repeats: int) -> dict[str, tuple[float, float]]:
        """Seconds per forward token and per generated token, with the spread of their repeats
        (taskfit.calibration)."""
        # timed on the transformers model inside a PEFT wrapper: adapter layers (LoRA, IA3) sit inside it; the
        # virtual tokens of prompt learning do not (a few tokens more per query), and a KV-cache decode step
        # would not take them as is
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return {"forward": measure_forward(model, self.device, repeats),
                "generate": measure_decode(model, self.device, repeats, kv_cache_arg(model))}

    # -- prompts ---------------------------------------------------------------------------------
    def prompt_text(self, messages: list[Message] | tuple[Message, ...]) -> str:
        """The exact text the model sees: the chat template with the generation prompt, or plain text."""
        return prompt_text(self.tokenizer, messages, self.use_chat_template)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"]

    # -- scoring ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        items = []
        for i, r in enumerate(requests):
            prompt = self._encode(self.prompt_text(r.messages))
            conts = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in r.continuations]
            if any(len(c) == 0 for c in conts):
                raise TaskfitError(f"a continuation tokenizes to nothing: {r.continuations!r}")
            items.append((i, prompt, conts))
        items.sort(key=lambda it: len(it[1]))  # similar lengths together: less padding
        results: list[ScoreResult | None] = [None] * len(requests)
        single_token = [it for it in items if all(len(c) == 1 for c in it[2])]
        multi_token = [it for it in items if not all(len(c) == 1 for c in it[2])]
        for it in multi_token:  # e.g. 77 intent names: the prompt runs once, its KV cache serves every label
            results[it[0]] = self._score_continuations(*it)
        items = single_token
        bs = self.options.batch_size
        for start in range(0, len(items), bs):
            batch = items[start:start + bs]
            t0 = time.perf_counter()
            rows: list[list[int]] = []
            targets: list[list[tuple[int, int]]] = []  # (position whose logits predict, token id)
            owners: list[tuple[int, int]] = []  # (item index in batch, continuation index)
            single = all(len(c) == 1 for _, _, conts in batch for c in conts)
            for b, (_, prompt, conts) in enumerate(batch):
                if single:
                    # one forward per example: every label is read off the last prompt position
                    rows.append(prompt)
                    targets.append([(len(prompt) - 1, c[0]) for c in conts])
                    owners.append((b, -1))
                else:
                    for j, c in enumerate(conts):
                        rows.append(prompt + c)
                        targets.append([(len(prompt) - 1 + k, tok) for k, tok in enumerate(c)])
                        owners.append((b, j))
            logps = self._target_logprobs(rows, targets)
            elapsed_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            per_item: dict[int, list[float]] = {b: [0.0] * len(batch[b][2]) for b in range(len(batch))}
            for (b, j), lp in zip(owners, logps, strict=True):
                if j == -1:
                    per_item[b] = lp
                else:
                    per_item[b][j] = sum(lp)
            for b, (i, prompt, conts) in enumerate(batch):
                results[i] = ScoreResult(logprobs=[float(x) for x in per_item[b]],
                                         token_counts=[len(c) for c in conts], tokens_in=len(prompt),
                                         latency_ms=elapsed_ms)
        return results  # type: ignore[return-value]

    def _score_continuations(self, i: int, prompt: list[int], conts: list[list[int]]) -> ScoreResult:
        """One example with multi-token continuations: the prompt once, then the continuations' token trie in
        one sequence with a tree attention mask, so leading tokens that labels share are computed once."""
        if not self._scores_trees(len(prompt) + max(len(c) for c in conts)):
            return self._score_rows(i, prompt, conts)
        t0 = time.perf_counter()
        logps = self._trie_logprobs(prompt, label_trie.build(conts))
        return ScoreResult(logprobs=logps, token_counts=[len(c) for c in conts], tokens_in=len(prompt),
                           latency_ms=(time.perf_counter() - t0) * 1000)

    def _scores_trees(self, length: int) -> bool:
        """Whether the model takes a tree attention mask as given: a 4D mask goes unchanged to sdpa and eager
        attention (flash kernels take none), and a sliding window would cut what the mask allows."""
        if self.plain_forward:  # PEFT's virtual tokens sit in front of the prompt: the mask would not cover them
            return False
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        return getattr(config, "_attn_implementation", None) in ("sdpa", "eager") and (window is None or length <= window)

    def _trie_logprobs(self, prompt: list[int], trie: label_trie.LabelTrie) -> list[float]:
        """Each continuation's summed log-probability after ``prompt``, the trie's inner nodes run in passes of
        bounded size on top of the prompt's KV cache (which grows by each pass's nodes)."""
        from transformers import DynamicCache

        cached = len(prompt) - 1  # the last prompt token predicts every first label token: it runs here
        if cached >= MIN_SHARED_PREFIX:
            cached, past = self._shared_prefix(tuple(prompt[:cached]), 1)
        else:
            cached, past = 0, DynamicCache(config=self.model.config)
        stem = prompt[cached:]
        children: dict[int, list[int]] = {}
        for node, parent in enumerate(trie.parents):
            children.setdefault(parent, []).append(node)
        base = self.model.get_decoder()
        node_lp = [0.0] * len(trie.tokens)
        for k, (start, end) in enumerate(label_trie.passes(len(trie.inner), len(prompt), len(stem), SCORE_PASS_CELLS)):
            stem_rows = len(stem) if k == 0 else 0  # a first pass may hold the stem alone: (0, 0)
            nodes = trie.inner[start:end]
            ids = (stem if stem_rows else []) + [trie.tokens[n] for n in nodes]
            positions = (list(range(cached, len(prompt))) if stem_rows else []) + [len(prompt) - 1 + trie.depths[n] for n in nodes]
            mask = label_trie.tree_mask(trie, range(start, end), len(prompt), stem_rows, self.model.dtype)
            out = base(input_ids=torch.tensor([ids], device=self.device),
                       position_ids=torch.tensor([positions], device=self.device),
                       attention_mask=mask.to(self.device), use_cache=True, **{kv_cache_arg(base): past})
            past = out[kv_cache_arg(base)]
            # the positions whose logits are read: the prompt's last token (first pass), then each inner node
            sources = ([-1] if stem_rows else []) + nodes
            hidden = out.last_hidden_state[0, stem_rows - 1:] if stem_rows else out.last_hidden_state[0]
            flat = [(r, child) for r, src in enumerate(sources) for child in children.get(src, [])]
            rows_idx = torch.tensor([r for r, _ in flat], device=self.device)
            tok_idx = torch.tensor([trie.tokens[c] for _, c in flat], device=self.device)
            for (_, child), lp in zip(flat, self._token_logprobs(hidden[rows_idx], tok_idx), strict=True):
                node_lp[child] = lp
        path_lp = [0.0] * len(trie.tokens)
        for node, parent in enumerate(trie.parents):  # a parent comes before its children
            path_lp[node] = node_lp[node] + (path_lp[parent] if parent >= 0 else 0.0)
        return [path_lp[e] for e in trie.ends]

    def _token_logprobs(self, hidden: torch.Tensor, tok_idx: torch.Tensor) -> list[float]:
        """log p(token) after each of ``hidden``'s rows: only the positions read go through the
        (large-vocabulary) output layer."""
        logits = self.model.get_output_embeddings()(hidden).float()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return torch.log_softmax(logits, dim=-1).gather(1, tok_idx[:, None])[:, 0].tolist()

    def _score_rows(self, _i: int, prompt: list[int], conts: list[list[int]]) -> ScoreResult:
        """One example with multi-token continuations, one row per continuation: rows share the whole prompt,
        so the shared-prefix cache covers it and each row only runs its continuation."""
        t0 = time.perf_counter()
        logps: list[float] = []
        # continuation rows are short: batch many at once, as many as the prompt's length leaves room for
        group = max(1, min(self.options.batch_size * 8, SCORE_PASS_TOKENS // max(len(prompt), 1)))
        for start in range(0, len(conts), group):
            part = conts[start:start + group]
            rows = [prompt + c for c in part]
            targets = [[(len(prompt) - 1 + k, tok) for k, tok in enumerate(c)] for c in part]
            logps += [sum(lp) for lp in self._target_logprobs(rows, targets)]
        return ScoreResult(logprobs=logps, token_counts=[len(c) for c in conts], tokens_in=len(prompt),
                           latency_ms=(time.perf_counter() - t0) * 1000)

    def _target_logprobs(self, rows: list[list[int]], targets: list[list[tuple[int, int]]]) -> list[list[float]]:
        """Log-probabilities of target tokens; rows are right-padded, so pads never precede a real token."""
        # every position whose logits are read must be computed in this pass, not inside the cached prefix
        if self.plain_forward:
            return self._plain_target_logprobs(rows, targets)
        first_needed = min(pos for ts in targets for pos, _ in ts)
        prefix_len = _common_prefix_len(rows, limit=first_needed)
        past = None
        if prefix_len >= MIN_SHARED_PREFIX:
            prefix_len, past = self._shared_prefix(tuple(rows[0][:prefix_len]), len(rows))
        else:
            prefix_len = 0
        width = max(len(r) for r in rows) - prefix_len
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, : len(r) - prefix_len] = torch.tensor(r[prefix_len:])
        ids = ids.to(self.device)
        base = self.model.get_decoder()
        out = base(input_ids=ids, use_cache=past is not None, **{kv_cache_arg(base): past})
        hidden = out.last_hidden_state
        # only the positions we need go through the (large-vocabulary) output layer
        flat = [(k, pos - prefix_len, tok) for k, ts in enumerate(targets) for pos, tok in ts]
        rows_idx = torch.tensor([f[0] for f in flat], device=self.device)
        pos_idx = torch.tensor([f[1] for f in flat], device=self.device)
        tok_idx = torch.tensor([f[2] for f in flat], device=self.device)
        lp = self._token_logprobs(hidden[rows_idx, pos_idx], tok_idx)
        out_lp: list[list[float]] = []
        n = 0
        for ts in targets:
            out_lp.append(lp[n:n + len(ts)])
            n += len(ts)
        return out_lp

    def _plain_target_logprobs(self, rows: list[list[int]], targets: list[list[tuple[int, int]]]) -> list[list[float]]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=torch.ones_like(ids).to(self.device)).logits
        logits = logits[:, -width:].float()  # prompt tuning returns its virtual positions first
        lp = torch.log_softmax(logits, dim=-1)
        return [[float(lp[k, pos, tok]) for pos, tok in ts] for k, ts in enumerate(targets)]

    def _shared_prefix(self, prefix: tuple[int, ...], batch: int):
        """KV cache for (a cached start of) ``prefix``, repeated for the batch; returns (its length, cache)."""
        # a batch whose rows happen to share a few more tokens (e.g. reviews starting with "the") reuses the
        # run's cached prefix instead of recomputing a slightly longer one
        reusable = [k for k in self._prefix_cache
                    if len(prefix) - len(k) < MIN_SHARED_PREFIX and prefix[:len(k)] == k]
        key = max(reusable, key=len) if reusable else prefix
        if key not in self._prefix_cache:
            ids = torch.tensor([list(key)], device=self.device)
            if len(self._prefix_cache) >= 4:  # a run uses one or two prefixes; keep memory bounded
                self._prefix_cache.pop(next(iter(self._prefix_cache)))
            decoder = self.model.get_decoder()
            out = decoder(input_ids=ids, use_cache=True)
            self._prefix_cache[key] = out[kv_cache_arg(decoder)]
        # broadcast views, not copies: the forward pass concatenates new keys/values onto them without writing
        # into the cached tensors (a deepcopy + repeat of a few-shot block cost more than the forward itself)
        from transformers import DynamicCache

        cached = self._prefix_cache[key]
        past = DynamicCache(ddp_cache_data=[(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                                            for layer in cached.layers], config=self.model.config)
        return len(key), past

    # -- generation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        results: list[GenerateResult | None] = [None] * len(requests)
        encoded = [(i, self._encode(self.prompt_text(r.messages))) for i, r in enumerate(requests)]
        # group requests with identical sampling settings, similar lengths together
        encoded.sort(key=lambda it: (_sampling_key(requests[it[0]]), len(it[1])))
        bs = self.options.batch_size
        start = 0
        while start < len(encoded):
            key = _sampling_key(requests[encoded[start][0]])
            end = start
            while end < len(encoded) and end - start < bs and _sampling_key(requests[encoded[end][0]]) == key:
                end += 1
            batch = encoded[start:end]
            start = end
            req = requests[batch[0][0]]
            t0 = time.perf_counter()
            texts, n_out = self._generate_batch([ids for _, ids in batch], req)
            elapsed_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            for b, (i, ids) in enumerate(batch):
                results[i] = GenerateResult(texts=texts[b], tokens_in=len(ids), tokens_out=n_out[b],
                                            latency_ms=elapsed_ms)
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], req: GenerateRequest) -> tuple[list[list[str]], list[int]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for k, ids in enumerate(batch):  # left padding: every row ends where generation starts
            input_ids[k, width - len(ids):] = torch.tensor(ids)
            mask[k, width - len(ids):] = 1
        sample = req.temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=req.max_tokens, do_sample=sample, pad_token_id=pad,
                                      num_return_sequences=req.n if sample else 1)
        if sample:
            kwargs["temperature"] = req.temperature
            torch.manual_seed(req.seed)
        else:  # silence the sampling defaults that generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if req.stop:
            kwargs.update(stop_strings=list(req.stop), tokenizer=self.tokenizer)
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        gen = out[:, width:].tolist()
        per_prompt = req.n if sample else 1
        texts: list[list[str]] = []
        n_out: list[int] = []
        special = {self.tokenizer.eos_token_id, pad}
        for k in range(len(batch)):
            seqs = gen[k * per_prompt:(k + 1) * per_prompt]
            decoded, count = [], 0
            for seq in seqs:
                toks = []
                for t in seq:
                    if t in special:
                        break
                    toks.append(t)
                count += len(toks) + (1 if len(toks) < len(seq) else 0)
                decoded.append(_cut_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), req.stop))
            if not sample and req.n > 1:
                decoded = decoded * req.n  # greedy decoding: n identical samples
            texts.append(decoded)
            n_out.append(count)
        return texts, n_out


def kv_cache_arg(module: torch.nn.Module) -> str:
    """The name a model's forward takes (and returns) its KV cache under: ``cache`` in current transformers,
    where the old ``past_key_values`` prints a FutureWarning on every call; ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _sampling_key(r: GenerateRequest) -> tuple:
    return (r.max_tokens, r.stop, r.temperature, r.n, r.seed)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _common_prefix_len(rows: list[list[int]], limit: int) -> int:
    first = rows[0]
    n = min(limit, len(first))
    for r in rows[1:]:
        k = 0
        m = min(n, len(r))
        while k < m and r[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n
