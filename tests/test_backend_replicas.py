"""An openai model on several servers (``base_url: [a, b]``): requests spread over the replicas with
``concurrency`` each, a request that fails on one is answered by another, and the call cache does not care
which replica answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from conftest import serving
from test_backend_openai import FakeServer, _req

from taskfit.backends.openai import OpenAIBackend, create
from taskfit.cache import CallCache
from taskfit.errors import TaskfitError
from taskfit.lm import LM, Trace
from taskfit.taskfile import ModelSpec


@pytest.fixture
def servers() -> Iterator[tuple[FakeServer, FakeServer]]:
    a, b = FakeServer(), FakeServer()
    with ExitStack() as stack:
        for s in (a, b):
            stack.enter_context(serving(s.httpd, on_stop=s.stopping.set))
        yield a, b


def backend(*urls: str, **options) -> OpenAIBackend:
    spec = ModelSpec(backend="openai", base_url=list(urls), model="m", timeout_s=5.0, **options)
    return OpenAIBackend(spec, backoff_s=0.01)


def test_both_replicas_get_traffic_and_each_its_own_concurrency(servers):
    a, b = servers
    for s in (a, b):
        s.delay = lambda content: 0.05  # requests overlap: each replica fills its two slots
    with backend(a.base_url, b.base_url, concurrency=2) as be:
        results = be.generate([_req(f"question {i}") for i in range(16)])
    assert [r.texts for r in results] == [[f"echo: question {i}"] for i in range(16)]
    assert a.requests > 0 and b.requests > 0 and a.requests + b.requests == 16
    assert a.max_in_flight == 2 and b.max_in_flight == 2  # concurrency is per replica


def test_a_replica_answering_5xx_loses_its_requests_to_the_other(servers):
    a, b = servers
    a.status = 503  # every request, retries included
    with backend(a.base_url, b.base_url, concurrency=2, max_retries=1) as be:
        results = be.generate([_req(f"question {i}") for i in range(12)])
    assert all(r.error is None for r in results)
    assert [r.texts for r in results] == [[f"echo: question {i}"] for i in range(12)]
    assert a.requests >= 2 and b.requests == 12  # the failing one was tried; b answered every request


def test_a_replica_that_is_down_is_passed_over(servers):
    _, b = servers
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with backend(dead, b.base_url, concurrency=2, max_retries=0) as be:
        results = be.generate([_req(f"question {i}") for i in range(8)])
    assert all(r.error is None for r in results) and b.requests == 8


def test_every_replica_failing_is_an_error_result(servers):
    a, b = servers
    a.status = b.status = 500
    with backend(a.base_url, b.base_url, max_retries=0) as be:
        (result,) = be.generate([_req("question")])
    assert result.error and "HTTP 500" in result.error


def test_the_cache_does_not_depend_on_which_replica_answered(servers, workspace):
    a, b = servers
    cache = CallCache(workspace.engine)
    reqs = [_req(f"question {i}") for i in range(8)]
    with backend(a.base_url, b.base_url) as both:
        LM(both, cache).generate(reqs, [Trace() for _ in reqs])
    sent = a.requests + b.requests
    assert a.requests and b.requests
    with backend(a.base_url) as first, backend(a.base_url, b.base_url) as again:
        assert first.model_id == again.model_id == f"openai:{a.base_url}:m"  # the first URL names the model
        for be in (first, again):
            LM(be, cache).generate(reqs, [Trace() for _ in reqs])
    assert a.requests + b.requests == sent  # every call a cache hit, b's answers included


def test_every_url_goes_through_the_credential_check(servers):
    a, _ = servers
    with pytest.raises(TaskfitError, match=r"models\[\]\.base_url\[1\] holds credentials") as e:
        create(ModelSpec(backend="openai", base_url=[a.base_url, "http://user:hunter2@127.0.0.1:1/v1"], model="m"))
    assert "hunter2" not in str(e.value)
    with pytest.raises(TaskfitError, match="the same URL twice"):
        create(ModelSpec(backend="openai", base_url=[a.base_url, a.base_url + "/"], model="m"))


def test_a_task_file_with_a_credential_in_a_replica_url_names_its_line(make_task):
    from taskfit.taskfile import load_task

    path = make_task(models=[{"backend": "openai", "model": "m",
                              "base_url": ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1?token=abc123"]}])
    with pytest.raises(TaskfitError) as e:
        load_task(path)
    lines = path.read_text().splitlines()
    assert e.value.field == "models[0].base_url[1]" and "abc123" not in str(e.value)
    assert e.value.line == next(i for i, line in enumerate(lines, 1) if "8001" in line)
