"""The review app under hostile requests: Host and origin checks, the body limit, the export header, run ids."""

from __future__ import annotations

import pytest
import test_ui
from fastapi.testclient import TestClient
from test_ui import LOCAL

from taskfit.study import run_study
from taskfit.ui.app import create_app

runs = test_ui.runs  # the fixture: the 8-row scripted study


@pytest.fixture
def client(runs, workspace):
    """A client that sends only the headers each test gives (no Origin by default)."""
    return TestClient(create_app(workspace), base_url=LOCAL)


def test_loopback_mode_accepts_only_loopback_hosts(runs, workspace):
    app = create_app(workspace)
    for base in (LOCAL, "http://localhost:8765", "http://[::1]:8765", "http://127.0.0.1"):
        assert TestClient(app, base_url=base).get("/").status_code == 200, base
    rebound = TestClient(app, base_url="http://evil.example:8765").get("/")
    assert rebound.status_code == 403 and "evil.example" in rebound.text
    # the operator names the hosts it is reached by; a token mode does not check the name
    assert TestClient(create_app(workspace, allowed_hosts=["review.lan"]),
                      base_url="http://review.lan:8765").get("/").status_code == 200
    assert TestClient(create_app(workspace, token="t"), base_url="http://review.example.com").get(
        "/", headers={"X-Taskfit-Token": "t"}).status_code == 200


def test_posts_need_evidence_of_the_same_origin(client, runs):
    form = {"run_id": runs["zero_shot"], "example_id": "r0", "verdict": "correct"}
    assert client.post("/label", data=form, follow_redirects=False).status_code == 403  # no Origin at all
    assert client.post("/label", data=form, headers={"Origin": "null"}, follow_redirects=False).status_code == 403
    assert client.post("/label", data=form, headers={"Referer": "http://evil.example/x"}).status_code == 403
    assert client.post("/label", data=form, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    for evidence in ({"Origin": LOCAL}, {"Referer": f"{LOCAL}/runs/x"}, {"Sec-Fetch-Site": "same-origin"}):
        assert client.post("/label", data=form, headers=evidence, follow_redirects=False).status_code == 303, evidence


def test_request_bodies_are_limited(client, runs):
    form = {"run_id": runs["zero_shot"], "example_id": "r0", "verdict": "correct", "comment": "x" * 3_000_000}
    res = client.post("/label", data=form, headers={"Origin": LOCAL})
    assert res.status_code == 413

    def chunked():  # no Content-Length: counted as it arrives
        yield b"run_id=" + runs["zero_shot"].encode() + b"&example_id=r0&verdict=correct&comment="
        for _ in range(300):
            yield b"y" * 10_000

    res = client.post("/label", content=chunked(), headers={"Origin": LOCAL,
                                                          "Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 413
    small = client.post("/label", data={**form, "comment": "fine"}, headers={"Origin": LOCAL},
                        follow_redirects=False)
    assert small.status_code == 303


@pytest.mark.parametrize("task", ['x"; filename="evil.sh', "a\r\nSet-Cookie: s=1", "naïve ünïcode/../x"])
def test_export_filename_cannot_inject_headers(client, task):
    res = client.get("/export/preferences.jsonl", params={"task": task})
    assert res.status_code == 200
    disposition = res.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "set-cookie" not in res.headers
    assert disposition.count('filename="') == 1 and disposition.count("filename*=UTF-8''") == 1
    plain = disposition.split('filename="')[1].split('"')[0]
    assert plain.startswith("preferences-") and plain.endswith(".jsonl") and "/" not in plain
    assert all(c.isalnum() or c in "._-" for c in plain)


def test_like_wildcards_do_not_match_run_ids(client, runs):
    run_id = runs["zero_shot"]
    assert client.get(f"/runs/{run_id[:4]}").status_code == 200  # a unique prefix still works
    assert client.get(f"/runs/{run_id[:7]}_").status_code == 404
    assert client.get(f"/api/counts/{run_id[:3]}%25").status_code == 404


def test_a_lone_wildcard_does_not_resolve_the_only_run(make_task, workspace):
    run_study(make_task(), workspace=workspace, strategy_names=["zero_shot"])
    app = TestClient(create_app(workspace), base_url=LOCAL)
    assert app.get("/runs/%25").status_code == 404 and app.get("/runs/_").status_code == 404
