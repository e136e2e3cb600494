"""The review web app over HTTP (no browser): pages, forms, the token, safety checks, the command."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient

from taskfit.netguard import is_loopback
from taskfit.study import run_study
from taskfit.ui.app import create_app

LOCAL = "http://127.0.0.1:8765"  # loopback: the Host header an app without a token accepts


@pytest.fixture
def runs(make_task, workspace):
    """The 8-row scripted sentiment study: {strategy: run id}."""
    _, table = run_study(make_task(), workspace=workspace)
    return {r.strategy: r.run_id for r in table}


@pytest.fixture
def client(runs, workspace):
    """A browser on the app's own pages: loopback host, and posts carry this Origin."""
    return TestClient(create_app(workspace), base_url=LOCAL, headers={"Origin": LOCAL})


def test_every_page_renders(client, runs):
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    page = client.get("/").text
    assert zs in page and fs in page and "few_shot_balanced" in page
    board = client.get("/leaderboard").text
    assert "0.875 [" in board and "Best: zero_shot x fake" in board and "prompt only" in board
    run = client.get(f"/runs/{zs}").text
    assert 'id="count-unreviewed">8<' in run and "a great and moving film" in run
    example = client.get(f"/runs/{zs}/examples/r0").text
    assert "call 1: score (score)" in example and "Review: a great and moving film" in example
    diff = client.get(f"/diff?a={zs}&b={fs}").text
    assert "8 shared examples" in diff
    queue = client.get("/queue").text
    assert 'id="remaining">8<' in queue and "No labels on" in queue
    assert client.get("/export/preferences.jsonl").text == ""


def test_leaderboard_shows_what_a_tuned_row_has(client, runs, monkeypatch):
    import taskfit.leaderboard

    real = taskfit.leaderboard.rows

    def with_tuned(store, chosen):
        table = real(store, chosen)
        table[0] = replace(
            table[0],
            model="tuned:ab12",
            tune={
                "id": "ab12",
                "method": "lora",
                "objective": "classify",
                "base_model": "smollm2-135m",
                "train_time_s": 361.4,
                "peak_mem_mb": None,
                "trainable_pct": 0.68,
                "device": "cpu",
                "forgetting": {"score_before": 0.41, "score_after": 0.39, "ppl_before": None},
            },
        )
        return table

    monkeypatch.setattr(taskfit.leaderboard, "rows", with_tuned)
    page = client.get("/leaderboard").text
    assert (
        "lora (classify) · on smollm2-135m · 361 s training on cpu · 0.68% trainable · "
        "general score 0.410 -&gt; 0.390"
    ) in page
    assert "MB peak" not in page and "tuned:ab12" in page and "prompt only" in page


def test_reviewing_changes_counts_and_the_human_score(client, runs):
    zs = runs["zero_shot"]
    for example, verdict in [("r0", "correct"), ("r1", "incorrect"), ("r2", "correct")]:
        res = client.post(
            "/label",
            data={
                "run_id": zs,
                "example_id": example,
                "verdict": verdict,
                "next": f"/runs/{zs}#ex-{example}",
            },
            follow_redirects=False,
        )
        assert res.status_code == 303 and res.headers["location"] == f"/runs/{zs}#ex-{example}"
    page = client.get(f"/runs/{zs}").text
    assert (
        'id="count-correct">2<' in page
        and 'id="count-incorrect">1<' in page
        and 'id="count-unreviewed">5<' in page
    )
    counts = client.get(f"/api/counts/{zs}").json()
    assert counts["labelled"] == 3 and counts["correct"] == 2 and counts["ci"][0] < 2 / 3 < counts["ci"][1]
    queue = client.get("/queue").text
    assert 'id="ci-chart"' in queue and "after 3" in queue
    assert "0.667 [" in client.get("/leaderboard").text


def test_pairwise_choice_and_export(client, runs, workspace):
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    store = workspace.runs
    a = {p.example_id: p.answer for p in store.predictions(zs, with_trace=False)}
    b = {p.example_id: p.answer for p in store.predictions(fs, with_trace=False)}
    differ = next(e for e in a if a[e] != b[e])
    res = client.post(
        "/choice",
        data={"run_a": zs, "run_b": fs, "example_id": differ, "choice": "a"},
        follow_redirects=False,
    )
    assert res.status_code == 303
    assert 'id="wins-a">1<' in client.get(f"/diff?a={zs}&b={fs}").text
    res = client.get("/export/preferences.jsonl?task=tiny")
    assert res.headers["content-disposition"] == (
        "attachment; filename=\"preferences-tiny.jsonl\"; filename*=UTF-8''preferences-tiny.jsonl"
    )
    (record,) = [json.loads(line) for line in res.text.splitlines()]
    assert (record["chosen"], record["rejected"]) == (a[differ], b[differ]) and "Review:" in record["prompt"]


def test_bad_input_is_a_page_with_the_reason(client, runs):
    res = client.post("/label", data={"run_id": runs["zero_shot"], "example_id": "r0", "verdict": "maybe"})
    assert res.status_code == 400 and "verdict must be one of correct, incorrect" in res.text
    assert client.get("/runs/nosuchrun").status_code == 404
    assert client.get(f"/runs/{runs['zero_shot']}/examples/nope").status_code == 404


def test_diff_of_runs_on_different_tasks_is_refused(client, runs, make_task, workspace):
    _, table = run_study(make_task(name="other"), workspace=workspace, strategy_names=["zero_shot"])
    res = client.get(f"/diff?a={runs['zero_shot']}&b={table[0].run_id}")
    assert res.status_code == 400 and "different tasks" in res.text


def test_example_ids_with_slashes_and_spaces_open(make_task, tmp_path, workspace):
    path = make_task()
    data = tmp_path / "data" / "test.jsonl"
    data.write_text(data.read_text().replace('"id": "r0"', '"id": "doc/7 part 1"'))
    _, table = run_study(path, workspace=workspace, strategy_names=["zero_shot"])
    client = TestClient(create_app(workspace), base_url=LOCAL)
    run_id = table[0].run_id
    assert f'href="/runs/{run_id}/examples/doc/7%20part%201"' in client.get(f"/runs/{run_id}").text
    page = client.get(f"/runs/{run_id}/examples/doc/7%20part%201")
    assert page.status_code == 200 and "Example doc/7 part 1" in page.text


def test_untrusted_text_is_escaped(make_task, tmp_path, workspace):
    path = make_task()
    data = tmp_path / "data" / "test.jsonl"
    data.write_text(data.read_text().replace("a great and moving film", "<script>alert(1)</script> great"))
    _, table = run_study(path, workspace=workspace, strategy_names=["zero_shot"])
    page = TestClient(create_app(workspace), base_url=LOCAL).get(f"/runs/{table[0].run_id}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_token_is_required_on_every_request(runs, workspace):
    client = TestClient(create_app(workspace, token="s3cret"), base_url=LOCAL)
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"X-Taskfit-Token": "wrong"}).status_code == 401
    assert client.get("/", headers={"X-Taskfit-Token": "s3cret"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    res = client.get("/queue?token=s3cret&study=x", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/queue?study=x"  # the token leaves the URL
    assert (
        "taskfit_token=s3cret" in res.headers["set-cookie"]
        and "samesite=strict" in res.headers["set-cookie"].lower()
    )
    assert client.get("/").status_code == 200  # the cookie now carries it
    client.cookies.clear()
    assert (
        client.post(
            "/label", data={"run_id": runs["zero_shot"], "example_id": "r0", "verdict": "correct"}
        ).status_code
        == 401
    )


def test_cross_origin_posts_and_open_redirects_are_refused(client, runs):
    form = {"run_id": runs["zero_shot"], "example_id": "r0", "verdict": "correct"}
    assert client.post("/label", data=form, headers={"Origin": "http://evil.example"}).status_code == 403
    res = client.post(
        "/label",
        data={**form, "next": "//evil.example/x"},
        follow_redirects=False,
        headers={"Origin": LOCAL},
    )
    assert res.status_code == 303 and res.headers["location"] == "/"


def test_is_loopback():
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.0.0.2")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")


def _cli(args, home, **kw):
    env = {**os.environ, "TASKFIT_HOME": str(home)}
    env.pop("TASKFIT_UI_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "taskfit.cli", "ui", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_command_refuses_a_public_host_without_a_token(taskfit_home):
    proc = _cli(["--host", "0.0.0.0"], taskfit_home)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--host 0.0.0.0" in err and "--token" in err and "Traceback" not in err


def test_command_serves_with_a_token(runs, taskfit_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli(["--port", str(port), "--token", "t0k"], taskfit_home)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                res = httpx.get(base + "/", headers={"X-Taskfit-Token": "t0k"})
                break
            except httpx.ConnectError:
                assert time.time() < deadline and proc.poll() is None, (
                    proc.stderr.read() if proc.poll() is not None else ""
                )
                time.sleep(0.2)
        assert res.status_code == 200 and runs["zero_shot"] in res.text
        assert httpx.get(base + "/").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_diff_page_shows_the_paired_comparison_and_the_run_page_a_diff_form(client, runs):
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    run = client.get(f"/runs/{zs}").text
    assert 'id="diff-form"' in run and f'name="a" value="{zs}"' in run
    diff = client.get(f"/diff?a={zs}&b={fs}").text
    assert 'id="comparison"' in diff and "(McNemar)" in diff and "95% CI" in diff
    assert f"taskfit diff {zs} {fs}" in diff
