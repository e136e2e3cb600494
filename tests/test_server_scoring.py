"""Label scoring through the openai backend against loopback servers that answer in each API's response shapes
(vLLM's protocol.py CompletionResponse / ChatCompletionResponse / TokenizeResponse; OpenAI chat logprobs), some
lacking a path: the probe picks a path, falls back saying why, and never crashes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from conftest import serving
from loopback import loopback

from taskfit.backends import ScoreRequest
from taskfit.backends.openai import OpenAIBackend
from taskfit.backends.server_scoring import NOT_CHOSEN
from taskfit.taskfile import ModelSpec

POSITIVE, NEGATIVE = ("great", "loved", "warm"), ("boring", "terrible", "mess", "dull")
TEMPLATE = "<|user|>{}\n<|assistant|>"  # the fake model's chat template


def cue(text: str) -> str | None:
    """The fake model's opinion of a review: which label it favours."""
    low = text.lower()
    if any(w in low for w in POSITIVE):
        return "positive"
    if any(w in low for w in NEGATIVE):
        return "negative"
    return None


def char_logprob(prefix: str, ch: str) -> float:
    """The fake model's log-probability of the next character (tokens are characters, ids their code points)."""
    favoured = cue(prefix)
    if ch.lower() in "pn" and prefix.endswith(("\n<|assistant|>", " ", "Sentiment:")):
        return -0.1 if favoured and favoured[0] == ch.lower() else -2.5
    return -0.5 - (ord(ch) % 7) / 10  # arbitrary but distinct per character, so a wrong slice changes the sum


def render(messages: list[dict[str, Any]], *, prefill: bool = False) -> str:
    text = "".join(TEMPLATE.format(m["content"]) for m in messages if m["role"] != "assistant")
    if prefill and messages[-1]["role"] == "assistant":
        text += messages[-1]["content"]
    return text


class FakeServer:
    """An OpenAI-compatible server whose features are switched per test.

    completions: None (404), "token_logprobs" (echo + logprobs, OpenAI legacy / vLLM) or "prompt_logprobs" (vLLM's
    per-position {token id: Logprob}) ; tokenize: vLLM's /tokenize; chat_logprobs: OpenAI chat logprobs;
    choice: None, "structured_outputs", "guided_choice" or "response_format"; strict: unknown fields get HTTP 400
    (OpenAI) instead of being ignored (vLLM, Ollama).
    """

    def __init__(self, *, completions: str | None = None, tokenize: bool = False, chat_logprobs: bool = False,
                 choice: str | None = None, strict: bool = False, fail_all: int | None = None):
        self.completions, self.tokenize, self.chat_logprobs = completions, tokenize, chat_logprobs
        self.choice, self.strict, self.fail_all = choice, strict, fail_all
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self.httpd, self.base_url = loopback(self)

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
        if self.fail_all:
            return self.fail_all, {"error": {"message": "scripted failure", "type": "InternalServerError", "code": 500}}
        if path == "/tokenize" and self.tokenize:
            text = render(body["messages"], prefill=body.get("continue_final_message", False)) \
                if "messages" in body else body["prompt"]
            ids = [ord(c) for c in text]
            return 200, {"count": len(ids), "max_model_len": 4096, "tokens": ids, "token_strs": None}
        if path == "/v1/completions" and self.completions:
            return 200, self._completion(body)
        if path == "/v1/chat/completions":
            return self._chat(body)
        return 404, {"error": {"message": "Not Found", "type": "NotFoundError", "code": 404}}

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for i, ids in enumerate(body["prompt"]):
            text = "".join(chr(t) for t in ids)
            lps = [None] + [char_logprob(text[:k], text[k]) for k in range(1, len(text))]
            gen = "x"
            choice: dict[str, Any] = {"index": i, "text": text + gen, "finish_reason": "length", "stop_reason": None,
                                      "logprobs": None, "prompt_logprobs": None}
            if self.completions == "token_logprobs":
                offsets = list(range(len(text) + 1))
                choice["logprobs"] = {"text_offset": offsets, "token_logprobs": [*lps, -0.3],
                                      "tokens": [*text, gen], "top_logprobs": [None] + [{c: lp} for c, lp in
                                                                                     zip(text[1:], lps[1:], strict=True)]
                                      + [{gen: -0.3}]}
            else:  # vLLM prompt_logprobs: None first, then {token id: {logprob, rank, decoded_token}}
                choice["prompt_logprobs"] = [None] + [{str(ids[k]): {"logprob": lps[k], "rank": 1,
                                                                      "decoded_token": text[k]}}
                                                      for k in range(1, len(ids))]
            if self.completions == "ignored":  # a server that takes the fields but returns no log-probabilities
                choice.update(logprobs=None, prompt_logprobs=None)
            choices.append(choice)
        # out of order on purpose: the client must match choices to prompts by index
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": choices[::-1], "usage": {"prompt_tokens": sum(len(p) for p in body["prompt"]),
                                                    "total_tokens": 0, "completion_tokens": len(choices)}}

    def _chat(self, body: dict[str, Any]) -> tuple[int, Any]:
        known = {"model", "messages", "max_tokens", "temperature", "n", "seed", "stop", "tools", "logprobs",
                 "top_logprobs", "response_format"}
        unknown = set(body) - known
        if self.strict and unknown:
            return 400, {"error": {"message": f"Unrecognized request argument supplied: {sorted(unknown)[0]}",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        favoured = cue(user) or "negative"
        options = None
        if self.choice == "structured_outputs" and "structured_outputs" in body:
            options = body["structured_outputs"]["choice"]
        elif self.choice == "guided_choice" and "guided_choice" in body:
            options = body["guided_choice"]
        elif self.choice == "response_format" and "response_format" in body:
            options = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        if options is not None:
            pick = next((o for o in options if o.lower() == favoured), options[0])
            content = json.dumps({"label": pick}) if self.choice == "response_format" else pick
        else:
            content = favoured.capitalize() + "."
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                  "logprobs": None, "finish_reason": "stop"}
        if self.chat_logprobs and body.get("logprobs"):
            other = "negative" if favoured == "positive" else "positive"
            tops = [("Pos" if favoured == "positive" else "Neg", -0.2), (favoured, -1.0),
                    (other.capitalize()[:3], -2.2), (other, -3.0), ("The", -4.0)]
            tops = tops[: body.get("top_logprobs") or 1]
            choice["logprobs"] = {"content": [{"token": tops[0][0], "logprob": tops[0][1],
                                               "bytes": list(tops[0][0].encode()),
                                               "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                                                for t, lp in tops]}]}
        return 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [choice], "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 1,
                                                    "total_tokens": 0}}


SHAPES = {
    # name: (server features, path the probe must pick)
    "vllm": (dict(completions="token_logprobs", tokenize=True, chat_logprobs=True, choice="structured_outputs"),
             "completions"),
    "vllm_prompt_logprobs": (dict(completions="prompt_logprobs", tokenize=True, choice="guided_choice"), "completions"),
    "completions_without_logprobs": (dict(completions="ignored", tokenize=True, chat_logprobs=True),
                                     "chat_top_logprobs"),
    "openai": (dict(chat_logprobs=True, choice="response_format", strict=True), "chat_top_logprobs"),
    "ollama": (dict(chat_logprobs=True), "chat_top_logprobs"),
    "vllm_no_logprobs": (dict(choice="structured_outputs"), "choice"),
    "old_vllm_choice": (dict(choice="guided_choice"), "choice"),
    "bare": (dict(), "generate"),
}


def _study(make_task, workspace, server: FakeServer, **model: Any):
    from taskfit.study import run_study

    path = make_task(strategies=["zero_shot"],
                     models=[{"backend": "openai", "name": "srv", "base_url": server.base_url, "model": "m",
                              "max_retries": 0, **model}])
    _, rows = run_study(path, workspace=workspace)
    return rows[0]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_label_task_is_scored_by_the_path_the_server_offers(make_task, workspace, shape):
    features, expected = SHAPES[shape]
    server = FakeServer(**features)
    with serving(server.httpd):
        row = _study(make_task, workspace, server)
    assert row.score_via == expected
    assert row.server == server.base_url
    assert row.score == 1.0  # every review carries a cue word the fake model follows
    if expected == "generate":
        assert row.mode == "generate"
        # says why: each path and the reason it was not used
        assert "completions:" in row.score_via_reason and "HTTP 404" in row.score_via_reason
        assert "chat_top_logprobs: the chat reply has no logprobs" in row.score_via_reason
        assert "ignored" in row.score_via_reason or "not one of" in row.score_via_reason
        from rich.console import Console

        from taskfit.leaderboard import render

        console = Console(width=300, record=True)
        console.print(render([row]))
        shown = " ".join(console.export_text().split())
        assert f"generate on {server.base_url}" in shown and "srv: labels not scored on the server (completions:" in shown
    else:
        assert row.mode == "score" and row.parse_fail_rate == 0.0
    if shape == "completions_without_logprobs":
        assert "completions: the completion has no log-probabilities" in row.score_via_reason


def test_the_probe_runs_once_per_model_and_is_kept_in_the_cache(make_task, workspace):
    server = FakeServer(chat_logprobs=True)
    with serving(server.httpd):
        _study(make_task, workspace, server)
        first = dict(server.hits)
        _study(make_task, workspace, server, concurrency=2)  # another run (new run key), same model
    # the first run probed (/tokenize for completions, then chat) and scored 8 reviews; the second found the probe
    # and the scores in the cache: not one request
    assert first == {"/tokenize": 1, "/v1/chat/completions": 1 + 8}
    assert server.hits == first


def test_a_server_that_is_down_during_the_probe_is_not_remembered_as_unable(make_task, workspace):
    server = FakeServer(chat_logprobs=True, fail_all=500)
    with serving(server.httpd):
        row = _study(make_task, workspace, server)
        assert row.score_via == "generate" and "HTTP 500" in row.score_via_reason
        assert row.failed == 8  # generation failed too: recorded, not raised
        server.fail_all = None
        row = _study(make_task, workspace, server, concurrency=2)
    assert row.score_via == "chat_top_logprobs" and row.score == 1.0


def test_score_via_in_the_task_file_overrides_the_probe(make_task, workspace):
    server = FakeServer(completions="token_logprobs", tokenize=True, chat_logprobs=True, choice="structured_outputs")
    with serving(server.httpd):
        assert _study(make_task, workspace, server, score_via="choice").score_via == "choice"
        assert _study(make_task, workspace, server, score_via="generate").score_via == "generate"
        row = _study(make_task, workspace, server, score_via="chat_top_logprobs")
    assert row.score_via == "chat_top_logprobs" and row.score == 1.0


def test_completions_sums_exactly_the_continuation_tokens():
    server = FakeServer(completions="token_logprobs", tokenize=True)
    messages = [{"role": "user", "content": "a great film"}, {"role": "assistant", "content": "Sentiment:"}]
    with serving(server.httpd), OpenAIBackend(ModelSpec(backend="openai", base_url=server.base_url, model="m")) as b:
        assert b.probe().score_via == "completions" and b.probe().server_tokenize
        res = b.score([ScoreRequest(messages, (" positive", " negative", " pos"))])[0]
    prompt = render(messages, prefill=True)
    for cont, lp in zip((" positive", " negative", " pos"), res.logprobs, strict=True):
        text = prompt + cont
        expected = sum(char_logprob(text[:k], text[k]) for k in range(len(prompt), len(text)))
        assert lp == pytest.approx(expected)
    assert res.token_counts == [9, 9, 4] and res.tokens_in == len(prompt)


def test_chat_top_logprobs_reads_each_label_off_the_first_token():
    server = FakeServer(chat_logprobs=True)
    with serving(server.httpd), OpenAIBackend(ModelSpec(backend="openai", base_url=server.base_url, model="m")) as b:
        res = b.score([ScoreRequest([{"role": "user", "content": "a great film"}],
                                    ("positive", "Positive", "negative", "Negative", "neutral"))])[0]
    # positive <- "positive" (-1.0); Positive <- "Pos" (-0.2); negative <- "negative"; Negative <- "Neg";
    # neutral: no top token starts it, so the last top token's log-probability bounds it
    assert res.logprobs == [-1.0, -0.2, -3.0, -2.2, -4.0]


def test_labels_sharing_a_first_token_fall_back_and_say_so(make_task, workspace):
    server = FakeServer(chat_logprobs=True, choice="structured_outputs")
    with serving(server.httpd):
        from taskfit.study import run_study

        # without a tokenizer, a label that starts another label's text shares its first token
        path = make_task(strategies=["zero_shot"], label_aliases={"negative": ["positively not"]},
                         models=[{"backend": "openai", "name": "srv", "base_url": server.base_url, "model": "m"}])
        _, rows = run_study(path, workspace=workspace)
    row = rows[0]
    assert row.score_via == "choice"
    assert "labels 'negative'/'positive' share their first token" in row.score_via_reason


@pytest.mark.parametrize("shape", ["vllm", "ollama"])
def test_calibration_works_with_the_paths_that_yield_scores(make_task, workspace, shape):
    from taskfit.study import run_study

    server = FakeServer(**SHAPES[shape][0])
    with serving(server.httpd):
        path = make_task(strategies=["zero_shot"], calibrate=True,
                         models=[{"backend": "openai", "name": "srv", "base_url": server.base_url, "model": "m"}])
        _, rows = run_study(path, workspace=workspace)
    preds = workspace.runs.predictions(rows[0].run_id)
    steps = [c["step"] for c in preds[0].trace["calls"]]
    assert steps == ["score", "calibration"] and preds[0].trace["details"]["calibrated"]
    assert rows[0].score_via == SHAPES[shape][1] and rows[0].score == 1.0


def test_choice_is_a_decision_so_calibration_is_not_applied(make_task, workspace):
    from taskfit.study import run_study

    server = FakeServer(choice="structured_outputs")
    with serving(server.httpd):
        path = make_task(strategies=["zero_shot"], calibrate=True,
                         models=[{"backend": "openai", "name": "srv", "base_url": server.base_url, "model": "m"}])
        _, rows = run_study(path, workspace=workspace)
    pred = workspace.runs.predictions(rows[0].run_id)[0]
    assert [c["step"] for c in pred.trace["calls"]] == ["score"]
    assert sorted(pred.trace["calls"][0]["output"]) == [NOT_CHOSEN] * 3 + [0.0]


def test_the_model_entries_in_the_server_docs_are_valid():
    import re
    from pathlib import Path

    import yaml

    from taskfit.backends import backend_options
    from taskfit.backends.served_adapter import serve_via
    from taskfit.taskfile import ModelSpec

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```yaml\n(.*?)```", (root / "docs/servers.md").read_text(), flags=re.S)
    assert len(blocks) == 4
    readme = re.findall(r"```yaml\n(.*?)```", (root / "README.md").read_text(), flags=re.S)
    blocks += [b for b in readme if "serve_via" in b or "api.openai.com" in b]
    assert len(blocks) == 5
    for block in blocks:
        for entry in yaml.safe_load(block)["models"]:
            spec = ModelSpec.model_validate(entry)
            if getattr(backend_options(spec), "serve_via", None) is not None:
                assert serve_via(spec).base_url.startswith("http")


def test_a_tuned_model_named_on_the_command_line_goes_to_the_task_s_adapter_server(make_task):
    from taskfit.study import prepare, select_arms

    server = {"base_url": "http://127.0.0.1:8000/v1", "concurrency": 16}
    task, _ = prepare(make_task(strategies=["zero_shot"], models=["bundled", {"backend": "tuned", "serve_via": server}]))
    assert [a.model.label() for a in select_arms(task, None, None)] == ["smollm2-135m"]  # the entry is no row
    arm, = select_arms(task, None, ["tuned:ab12"])
    assert (arm.model.backend, arm.model.path, arm.model.serve_via) == ("tuned", "tuned:ab12", server)


def _server_task(make_task, server: FakeServer) -> Any:
    return make_task(strategies=["zero_shot"], models=[{"backend": "openai", "name": "srv", "base_url": server.base_url,
                                                        "model": "m", "max_retries": 0}])


def test_the_dry_run_of_a_server_not_probed_yet_says_so_and_gives_both_figures(make_task, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    server = FakeServer(**SHAPES["vllm"][0])
    with serving(server.httpd):
        res = CliRunner().invoke(app, ["eval", str(_server_task(make_task, server)), "--dry-run", "--json"])
        text = CliRunner().invoke(app, ["eval", str(_server_task(make_task, server)), "--dry-run"]).stdout
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert server.hits == {}  # a dry run sends nothing, not even the probe
    assert row["tokens_out"] == 0 and row["calls"] == 8 and "unknown until the first call" in row["scoring"]
    assert row["if_generated"]["tokens_out"] == 8 * 32 and row["if_generated"]["calls"] == 8
    assert "scoring path unknown until the first call" in " ".join(text.split())
    assert "if the server cannot score labels, it generates instead: 8 calls" in " ".join(text.split())


@pytest.mark.parametrize("shape", ["vllm", "bare"])
def test_the_dry_run_estimates_the_path_the_probe_found(make_task, workspace, shape):
    from taskfit.estimate import compare_runs, estimate_arms
    from taskfit.runner import evaluate
    from taskfit.study import prepare, select_arms

    features, path = SHAPES[shape]
    server = FakeServer(**features)
    task, ds = prepare(_server_task(make_task, server))
    arms = select_arms(task, None, None)
    with serving(server.httpd):
        evaluate(task, ds, arms, split="test", limit=2, workspace=workspace)  # probes the server; kept in the cache
        (est,) = estimate_arms(task, ds, arms, split="test", limit=None, cache=workspace.cache)
        records = evaluate(task, ds, arms, split="test", limit=None, workspace=workspace)
    assert records[0].config["backend"]["score_via"] == path
    assert est.scoring == "" and est.if_generated is None  # known: no second figure
    ((_, _, run_id),) = [(r.strategy, r.model, r.id) for r in records]
    (c,) = compare_runs(workspace.engine, [est], [(records[0].strategy, records[0].model, run_id)])
    est_out, act_out = c["tokens_out"]
    if path == "generate":
        assert act_out > 0 and abs(est_out - act_out) <= 0.25 * act_out
    else:
        assert est_out == act_out == 0  # a label-scoring server writes no output tokens
    est_calls, act_calls = c["calls"]
    assert act_calls == 6 and abs(est_calls - act_calls) <= 0.25 * act_calls  # 2 of 8 rows were in the cache
