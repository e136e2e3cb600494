"""A loopback vLLM-style server backed by a real transformers model: /tokenize, /v1/completions with echo and
logprobs, /v1/chat/completions, and the dynamic-LoRA endpoints, which load a PEFT adapter for real.

Response shapes follow vLLM's protocol (TokenizeResponse, CompletionResponse with CompletionLogProbs, ErrorResponse;
load/unload answer in plain text), so the scores a client reads through it are the model's own.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import torch
from loopback import loopback


class HFServer:
    def __init__(self, folder: Path, name: str = "base"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.models = {name: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()}
        self.base = name
        self.loads: list[dict[str, Any]] = []
        self.unloads: list[str] = []
        self.served: list[str] = []  # model name of every completions request
        self.lock = threading.Lock()
        self.httpd, self.base_url = loopback(self)

    # -- endpoints ---------------------------------------------------------------------------------
    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/tokenize":
            return 200, self._tokenize(body)
        if path == "/v1/load_lora_adapter":
            return self._load(body)
        if path == "/v1/unload_lora_adapter":
            with self.lock:
                if self.models.pop(body["lora_name"], None) is None:
                    return 404, f"The lora adapter '{body['lora_name']}' cannot be found."
                self.unloads.append(body["lora_name"])
            return 200, f"Success: LoRA adapter '{body['lora_name']}' removed successfully."
        model = self.models.get(body.get("model"))
        if model is None:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                   "type": "NotFoundError", "param": None, "code": 404}}
        if path == "/v1/completions":
            with self.lock:
                self.served.append(body["model"])
            return 200, self._completions(model, body)
        if path == "/v1/chat/completions":
            return 200, self._chat(model, body)
        return 404, {"error": {"message": "Not Found", "type": "NotFoundError", "param": None, "code": 404}}

    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        if "messages" in body:
            text = self.tokenizer.apply_chat_template(
                body["messages"], add_generation_prompt=body.get("add_generation_prompt", True),
                continue_final_message=body.get("continue_final_message", False), tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=body.get("add_special_tokens", False))["input_ids"]
        else:
            ids = self.tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
        return {"count": len(ids), "max_model_len": 2048, "tokens": ids, "token_strs": None}

    def _load(self, body: dict[str, Any]) -> tuple[int, Any]:
        from peft import PeftModel

        name = body["lora_name"]
        with self.lock:
            if name in self.models:
                return 400, {"error": {"message": f"The lora adapter '{name}' has already been loaded.",
                                       "type": "InvalidUserInput", "param": None, "code": 400}}
        # the adapter applied for real: a copy of the base with the LoRA weights folded in
        model = PeftModel.from_pretrained(copy.deepcopy(self.models[self.base]), body["lora_path"]).merge_and_unload()
        with self.lock:
            self.models[name] = model.eval()
            self.loads.append(dict(body))
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    @torch.inference_mode()
    def _completions(self, model, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if prompts and isinstance(prompts[0], int):
            prompts = [prompts]
        choices = []
        for i, p in enumerate(prompts):
            ids = p if isinstance(p, list) else self.tokenizer(p)["input_ids"]
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            nxt = int(lp[-1].argmax())
            token_lps = [None] + [float(lp[k - 1, ids[k]]) for k in range(1, len(ids))] + [float(lp[-1, nxt])]
            tokens = self.tokenizer.convert_ids_to_tokens([*ids, nxt])
            offsets, pos = [], 0
            for t in [*ids, nxt]:
                offsets.append(pos)
                pos += len(self.tokenizer.decode([t]))
            choices.append({"index": i, "text": self.tokenizer.decode([*ids, nxt]) if body.get("echo") else
                            self.tokenizer.decode([nxt]), "finish_reason": "length", "stop_reason": None,
                            "prompt_logprobs": None,
                            "logprobs": {"text_offset": offsets, "token_logprobs": token_lps, "tokens": tokens,
                                         "top_logprobs": [None] + [{tokens[k]: token_lps[k]} for k in
                                                                   range(1, len(tokens))]}
                            if body.get("logprobs") is not None else None})
        n_in = sum(len(c["logprobs"]["tokens"]) - 1 if c["logprobs"] else 0 for c in choices)
        return {"id": "cmpl-0", "object": "text_completion", "created": 0, "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": n_in, "completion_tokens": len(choices), "total_tokens": n_in + len(choices)}}

    @torch.inference_mode()
    def _chat(self, model, body: dict[str, Any]) -> dict[str, Any]:
        from taskfit.backends import GenerateRequest
        from taskfit.backends.tuned import live_backend

        backend = live_backend(model, self.tokenizer, torch.device("cpu"), True, body["model"])
        res = backend.generate([GenerateRequest(body["messages"], max_tokens=body.get("max_tokens") or 16,
                                                stop=tuple(body.get("stop") or ()))])[0]
        return {"id": "chatcmpl-0", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": res.texts[0]}, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
                          "total_tokens": res.tokens_in + res.tokens_out}}
