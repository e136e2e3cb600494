"""Distillation: a scripted (or loopback OpenAI) teacher labels, a tiny encoder student learns its labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REVIEWS, write_jsonl
from test_tuning import tiny_models  # noqa: F401  (session fixture: a 2-layer BERT and Llama built in code)

from taskfit.errors import TaskfitError

# the teacher: right on "great"/"terrible", and wrong on purpose on "boring" (says positive), so its labels
# differ from the gold ones and a student that learns them can be told apart from one that learns gold
SCRIPT = {"scores": {"great": {"positive": -0.1, "negative": -3.0}, "terrible": {"positive": -3.0, "negative": -0.2},
                     "boring": {"positive": -0.1, "negative": -4.0}, "loved": {"positive": -0.1, "negative": -3.0}},
          "default": "hmm"}


@pytest.fixture
def distill_task(tmp_path, tiny_models):  # noqa: F811
    def _make(distill=None, n_train: int = 16, unlabeled: int = 0, models=None, **extra) -> Path:
        rows = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
        train = [{"id": f"t{i}", "text": REVIEWS[i % 8][0] + f" ({i})", "label": REVIEWS[i % 8][1]}
                 for i in range(n_train)]
        write_jsonl(tmp_path / "data" / "test.jsonl", rows)
        write_jsonl(tmp_path / "data" / "train.jsonl", train)
        data = {"train": "data/train.jsonl", "test": "data/test.jsonl"}
        if unlabeled:
            write_jsonl(tmp_path / "data" / "unlabeled.jsonl",
                        [{"id": f"u{i}", "text": REVIEWS[i % 8][0] + f" [{i}]"} for i in range(unlabeled)])
            data["unlabeled"] = "data/unlabeled.jsonl"
        config = {"name": "tiny", "data": data, "inputs": ["text"], "output": "label",
                  "labels": ["negative", "positive"], "metrics": ["accuracy"],
                  "prompt": {"instruction": "Positive or negative?", "input_template": "Review: {{ text }}"},
                  "strategies": ["zero_shot"],
                  "models": models or [{"backend": "scripted", "name": "teacher", "script": SCRIPT,
                                        "price_in_per_1m": 2.0}],
                  "tuning": extra.pop("tuning") if "tuning" in extra else [_bert_row(tiny_models)],
                  "distill": distill or [], **extra}
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
    return _make


def _bert_row(tiny: dict) -> dict:
    return {"name": "bert+full", "method": "full", "objective": "classify", "model": str(tiny["bert"]),
            "epochs": 2, "forgetting": False, "batch_size": 4}


def _llama_row(tiny: dict) -> dict:
    return {"name": "llama+lora", "method": "lora", "objective": "sft", "max_steps": 2,
            "model": str(tiny["llama"]), "forgetting": False, "batch_size": 4}


def _teacher(task_path):
    from taskfit.distill.label import parse_teacher
    from taskfit.runner import BackendPool
    from taskfit.study import prepare

    task, ds = prepare(task_path)
    arm = parse_teacher(task, "zero_shot@teacher")
    return task, ds, arm, BackendPool().get(arm.model)


def test_teacher_and_student_are_checked_at_load(distill_task):
    from taskfit.study import prepare

    with pytest.raises(TaskfitError, match=r"distill\.0\.teacher.*<strategy>@<model>"):
        prepare(distill_task([{"teacher": "zero_shot", "student": "bert+full"}]))
    from taskfit.distill.student import student_spec

    task, _ = prepare(distill_task())
    with pytest.raises(TaskfitError, match="not a row of the task file's tuning list"):
        student_spec(task, "nope")
    assert student_spec(task, "0").label() == "bert+full"


def test_labels_are_the_teachers_answers_and_the_estimate_is_the_spend(distill_task, workspace):
    from taskfit.distill.label import estimate, label

    task, ds, arm, backend = _teacher(distill_task(n_train=16, unlabeled=5))
    from taskfit.distill.label import load_unlabeled

    rows = ds.split("train") + load_unlabeled(task)
    ws = workspace
    est = estimate(task, arm, rows, cache=ws.cache, demos=ds.split("train"))
    assert est.calls == 21 and est.cached == 0 and est.rows == 21
    out = label(task, arm, rows, backend=backend, workspace=ws, demos=ds.split("train"))
    assert out.cost.calls == est.calls == len(backend.requests)
    answers = {ex.id: ex.target for ex in out.examples}
    assert answers["t1"] == "positive"  # "boring and far too long": the teacher's (wrong) answer, not gold
    assert answers["u3"] == "negative" and "u3" in answers  # an unlabeled row gets the teacher's label
    # scripted tokens are the prompt's words; the cost is those tokens at the model's input price
    assert out.cost.tokens_in > 0 and out.cost.dollars == pytest.approx(out.cost.tokens_in * 2.0 / 1e6)
    # a rerun reads the stored run and the cache: no new call reaches the model
    sent = len(backend.requests)
    again = label(task, arm, rows, backend=backend, workspace=ws, demos=ds.split("train"))
    assert len(backend.requests) == sent and again.run_id == out.run_id and again.cost == out.cost
    assert estimate(task, arm, rows, cache=ws.cache, demos=ds.split("train")).cached == 21


@pytest.mark.parametrize("budget,n", [("7", 7), ("$0.0001", None)])
def test_the_budget_stops_labelling_before_it_is_passed(distill_task, workspace, budget, n):
    from taskfit.commands.distill import parse_budget
    from taskfit.distill.label import affordable, estimate, label

    task, ds, arm, backend = _teacher(distill_task(n_train=16))
    ws = workspace
    b = parse_budget(budget)
    est = estimate(task, arm, ds.split("train"), cache=ws.cache, demos=[])
    fit = affordable(est, b)
    assert 0 < fit < 16 and (n is None or fit == n)
    out = label(task, arm, ds.split("train"), backend=backend, workspace=ws, demos=[], budget=b)
    assert out.stopped and out.cost.rows == fit == len(backend.requests)
    if b.dollars:
        assert out.cost.dollars <= b.dollars
    with pytest.raises(TaskfitError, match="--budget"):
        parse_budget("lots")


def test_distilled_student_on_the_leaderboard(distill_task, workspace):
    """`taskfit run` with a `distill:` entry: the teacher, the student of its labels, the gold student."""
    from taskfit.study import run_study

    # the teacher's model writes the same new review for every request: one synthetic input survives dedup
    script = {**SCRIPT, "replies": {"Example 1": "a great new film"}}
    path = distill_task([{"teacher": "zero_shot@teacher", "student": "bert+full", "synthetic": {"n": 2}}],
                        n_train=16, unlabeled=4,
                        models=[{"backend": "scripted", "name": "teacher", "script": script, "price_in_per_1m": 2.0}])
    said: list[str] = []
    _, table = run_study(path, workspace=workspace, with_tuning=True, log=said.append)
    by_model = {r.model: r for r in table}
    assert set(by_model) == {"teacher", "bert+full", "bert+full~zero_shot@teacher"}
    assert "teacher zero_shot@teacher: 21/21 rows labelled" in said  # the labelling reports its progress
    student = by_model["bert+full~zero_shot@teacher"]
    d = student.tune["distill"]
    assert d["teacher"] == "zero_shot@teacher" and d["rows"] == {"train": 16, "unlabeled": 4, "synthetic": 1}
    # 21 rows labelled, and 6 requests (3 per wanted input) to write inputs, all but one of them duplicates
    assert d["labelling"]["calls"] == 21 + 6 and d["labelling"]["dollars"] > 0
    # the gold student of the same 16 train rows is the task's own tuning row (same data, same spec)
    assert d["gold_row"] == "bert+full" and d["gold_score"] == by_model["bert+full"].score
    # the teacher says positive for the 2 "boring" rows of 16: 14/16 of its train labels are right
    assert d["teacher_train_accuracy"] == pytest.approx(14 / 16)
    # agreement recomputed from the stored answers of both runs
    mine = {p.example_id: p.answer for p in workspace.runs.predictions(student.run_id)}
    theirs = {p.example_id: p.answer for p in workspace.runs.predictions(by_model["teacher"].run_id)}
    assert d["agreement"] == pytest.approx(sum(mine[k] == theirs[k] for k in mine) / len(mine))
    assert 0 <= d["p_vs_teacher"] <= 1
    # the student trained on the teacher's labels, not the gold ones: its training rows differ
    rec = workspace.tunes.get(student.tune["id"])
    gold = workspace.tunes.get(by_model["bert+full"].tune["id"])
    assert rec.data_hash != gold.data_hash and rec.result["rows"] == 21


def test_distill_command_dry_run_calls_no_model(distill_task, tmp_path, taskfit_home):
    from typer.testing import CliRunner

    from taskfit.cli import app

    log = tmp_path / "calls.txt"
    script = {**SCRIPT, "call_log": str(log)}
    path = distill_task(n_train=16, models=[{"backend": "scripted", "name": "teacher", "script": script}])
    res = CliRunner().invoke(app, ["distill", str(path), "--teacher", "zero_shot@teacher", "--student", "bert+full",
                                   "--dry-run", "--budget", "10"])
    assert res.exit_code == 0, res.output
    assert "16 rows (16 train, 0 unlabeled): 16 calls (0 already cached)" in res.output
    assert "the budget affords 10 of the 16 rows" in res.output
    assert not log.exists()


class _SentimentServer:
    """An OpenAI-compatible chat server on loopback: 'positive' when the review says great or loved, else
    'negative'; every reply reports 12 prompt tokens and 1 completion token."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.log.append((self.path, body))
                if not self.path.endswith("/chat/completions") or "messages" not in body:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                text = body["messages"][-1]["content"]
                server.requests += "Review:" in text and not body.get("logprobs")
                reply = "positive" if ("great" in text or "loved" in text) else "negative"
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.requests = 0  # answers to a review prompt (probes of the server's scoring support not counted)
        self.log: list = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_openai_teacher_end_to_end_with_token_prices(distill_task, taskfit_home):
    from conftest import serving
    from typer.testing import CliRunner

    from taskfit.cli import app

    server = _SentimentServer()
    models = [{"backend": "openai", "name": "big", "base_url": server.base_url, "model": "big-model",
               "price_in_per_1m": 3.0, "price_out_per_1m": 15.0}]
    path = distill_task(n_train=16, unlabeled=4, models=models)
    with serving(server.httpd):
        res = CliRunner().invoke(app, ["distill", str(path), "--teacher", "zero_shot@big", "--student", "bert+full",
                                       "--json"])
        assert res.exit_code == 0, res.output
        table = json.loads(res.stdout[res.stdout.index("["):])
        sent = server.requests
        # a second run is answered by the call cache and the stored models
        res2 = CliRunner().invoke(app, ["distill", str(path), "--teacher", "zero_shot@big", "--student", "bert+full",
                                        "--json"])
        assert res2.exit_code == 0 and server.requests == sent
    by_model = {r["model"]: r for r in table}
    assert set(by_model) == {"big", "bert+full~zero_shot@big", "bert+full~gold"}
    lab = by_model["bert+full~zero_shot@big"]["tune"]["distill"]["labelling"]
    # 20 rows labelled (16 train + 4 unlabeled), one call each, priced at the configured rates
    assert lab == {"calls": 20, "tokens_in": 240, "tokens_out": 20, "rows": 20,
                   "dollars": pytest.approx((240 * 3.0 + 20 * 15.0) / 1e6)}
    assert sent == 20 + 8  # the labels, then the teacher on the 8 test rows
    assert by_model["bert+full~zero_shot@big"]["tune"]["distill"]["gold_row"] == "bert+full~gold"


def test_synthetic_inputs_are_seeded_new_and_never_show_test_rows(distill_task, workspace):
    from taskfit.backends.scripted import ScriptedBackend
    from taskfit.distill.spec import SyntheticSpec
    from taskfit.distill.synthetic import synthesize

    task, ds, arm, _ = _teacher(distill_task(n_train=16))
    replies = iter([REVIEWS[0][0] + " (0)", REVIEWS[3][0],  # a train input, a test input: both dropped
                    "a great new film", "a great new film", "A GREAT  new film",  # one survives
                    "a terrible new film"])
    backend = ScriptedBackend({}, reply=lambda r: next(replies))
    ws = workspace
    spec = SyntheticSpec(n=2, seed=3)
    made, cost = synthesize(task, ds, spec, teacher=arm, backend=backend, cache=ws.cache)
    assert [ex.fields["text"] for ex in made] == ["a great new film", "a terrible new film"]
    assert cost.calls == 6 == len(backend.requests)
    prompts = ["\n".join(m["content"] for m in r.messages) for r in backend.requests]
    shown = [line for p in prompts for line in p.splitlines()]
    assert not {ex.fields["text"] for ex in ds.split("test")} & set(shown)
    assert all(p.count(" (") == 4 for p in prompts)  # each shows 4 train inputs ("... (i)")
    # the same seed makes the same requests: a rerun is answered by the call cache
    again, _ = synthesize(task, ds, spec, teacher=arm, backend=ScriptedBackend({}, reply=lambda r: 1 / 0),
                          cache=ws.cache)
    assert again == made


def test_rationale_student_learns_the_reasoning_then_the_answer(distill_task, workspace, tiny_models):  # noqa: F811
    from taskfit.distill.spec import DistillSpec
    from taskfit.distill.student import distill
    from taskfit.runner import evaluate
    from taskfit.study import prepare

    script = {**SCRIPT, "replies": {"great": "The review praises the film.", "terrible": "The review is harsh."}}
    path = distill_task(n_train=8, models=[{"backend": "scripted", "name": "teacher", "script": script}],
                        strategies=["zero_shot", "zero_shot_cot"], tuning=[_bert_row(tiny_models), _llama_row(tiny_models)],
                        prompt={"instruction": "Positive or negative?", "input_template": "Review: {{ text }}",
                                "response_prefix": "Sentiment:"})
    task, ds = prepare(path)
    ws = workspace
    kw = {"workspace": ws}
    with pytest.raises(TaskfitError, match="needs an sft student"):
        distill(task, ds, DistillSpec(teacher="zero_shot_cot@teacher", student="bert+full", rationale=True), **kw)
    with pytest.raises(TaskfitError, match="needs a reasoning teacher"):
        distill(task, ds, DistillSpec(teacher="zero_shot@teacher", student="llama+lora", rationale=True), **kw)
    d = distill(task, ds, DistillSpec(teacher="zero_shot_cot@teacher", student="llama+lora", rationale=True,
                                      gold=False), **kw)
    rendered = json.loads((d.student_record.folder / "template.json").read_text())["rendered_row"]
    # the first train row ("a great and moving film (0)"): the teacher's reasoning, then its answer
    assert "The review praises the film.\nThe answer is positive." in rendered
    assert "Sentiment:" not in rendered and d.student.strategy.name == "rationale"
    [rec] = evaluate(task, ds, [d.student], split="test", limit=2, workspace=ws)
    assert rec.status == "done" and len(ws.runs.predictions(rec.id)) == 2


def test_each_step_of_a_chain_has_its_own_student_and_the_chain_runs_on_them(distill_task, workspace,
                                                                            tiny_models):  # noqa: F811
    from sqlalchemy import text

    from taskfit.study import run_study

    chain = {"name": "chain", "id": "two_step", "steps": [
        {"name": "gist", "prompt": "Summarize: {{ text }}", "max_tokens": 8},
        {"name": "verdict", "prompt": "Gist: {{ steps.gist }}\nPositive or negative?", "max_tokens": 4}]}
    script = {"replies": {"Gist: good": "positive", "Gist: bad": "negative", "great": "good", "loved": "good"},
              "default": "bad"}
    student = _llama_row(tiny_models)
    path = distill_task([{"teacher": "two_step@teacher", "student": student, "per_step": True, "gold": False}],
                        n_train=8, strategies=[chain], tuning=[],
                        models=[{"backend": "scripted", "name": "teacher", "script": script}])
    _, table = run_study(path, workspace=workspace, with_tuning=True, limit=4)
    by_strategy = {r.strategy: r for r in table}
    students = by_strategy["two_step~students"]
    assert students.model == "llama+lora~two_step@teacher" and by_strategy["two_step"].score == 1.0
    d = students.tune["distill"]
    # 8 distinct first-step requests; the second step's prompt is "Gist: good" or "Gist: bad": 2 distinct ones
    assert d["teacher"] == "two_step@teacher" and d["labelling"]["calls"] == 8 + 2
    assert d["agreement"] is not None and students.n == 4
    tunes = workspace.tunes
    ids = tunes.get(students.tune["id"]).result["distill"]["step_tunes"]
    rendered = {k: json.loads((tunes.get(v).folder / "template.json").read_text())["rendered_row"]
                for k, v in ids.items()}
    # step 1 learns the teacher's gist of the row; step 2 its verdict, given the teacher's gist
    assert "Summarize: a great and moving film (0)" in rendered["gist"] and "good" in rendered["gist"]
    assert "Gist: good" in rendered["verdict"] and "positive" in rendered["verdict"]
    # the chain's two steps were answered by the two students (calls cached under each one's model id)
    with workspace.engine.connect() as c:
        used = {r[0].split(":")[1] for r in c.execute(text("SELECT DISTINCT model_id FROM calls"))
                if r[0].startswith("tuned:")}
    assert used == set(ids.values())


def test_gold_student_is_the_tuning_row_under_a_train_limit(distill_task, workspace):
    """`taskfit run --train-limit N`: the gold student of the first N rows is the tuning row of the same N."""
    from taskfit.study import run_study

    path = distill_task([{"teacher": "zero_shot@teacher", "student": "bert+full"}], n_train=16)
    _, table = run_study(path, workspace=workspace, with_tuning=True, train_limit=8)
    by_model = {r.model: r for r in table}
    assert set(by_model) == {"teacher", "bert+full", "bert+full~zero_shot@teacher"}
    d = by_model["bert+full~zero_shot@teacher"].tune["distill"]
    assert d["rows"]["train"] == 8 and d["gold_row"] == "bert+full"
