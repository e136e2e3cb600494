"""The HTTP face of `taskfit serve`: OpenAI-compatible routes, bearer-token auth, body limit, clean errors."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from taskfit.errors import TaskfitError
from taskfit.netguard import HostGuard
from taskfit.serve.log import ERROR_CHARS, RequestLog, cut
from taskfit.serve.pipeline import BadRequest, ChatOutput, Pipeline
from taskfit.serve.schema import CONVERSATION_ID, ChatRequest, chunks, completion, error_body
from taskfit.serve.vetting import Refused

CONVERSATION_HEADER = "X-Conversation-Id"
SHOWN_PROBLEMS = 5  # an invalid request's error names this many of its problems and counts the rest
PROBLEM_CHARS = 200  # of each problem's text (a message can quote a whole field)
logger = logging.getLogger("taskfit.serve")


class _Fail(Exception):
    """An error response: status, OpenAI error type, code, message."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 outcome: str = "bad_request"):
        super().__init__(message)
        self.status, self.kind, self.code, self.outcome = status, kind, code, outcome


def create_app(pipeline: Pipeline, token: str | None = None, log: RequestLog | None = None,
               allowed_hosts: Sequence[str] = ()) -> FastAPI:
    """The app serving ``pipeline``; with a ``token`` every /v1 route needs ``Authorization: Bearer <token>``.

    Without a token only requests for a loopback host (or one of ``allowed_hosts``) from no foreign web page
    are served (taskfit.netguard); with a token, ``allowed_hosts`` still restricts the Host when given.
    """
    cfg = pipeline.config
    limiter: dict[str, anyio.CapacityLimiter] = {}

    async def prune_forever() -> None:
        while True:
            await anyio.to_thread.run_sync(pipeline.retention.maybe_prune)
            await anyio.sleep(cfg.retention.every_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limiter["threads"] = anyio.CapacityLimiter(cfg.max_concurrent)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(prune_forever)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(title="taskfit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if token is None or allowed_hosts:
        app.add_middleware(HostGuard, allowed=allowed_hosts, refuse=lambda message: JSONResponse(
            error_body(message, "permission_error", "host_not_allowed"), status_code=403))

    def fail(e: _Fail) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(error_body(cut(str(e), ERROR_CHARS), e.kind, e.code), status_code=e.status,
                            headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _server_error(_: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the server's log, never to the client
        logger.exception("unhandled error")
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise _Fail(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                        "authentication_error", "invalid_api_key", "unauthorized")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": pipeline.model_name}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        try:
            authorize(request)
        except _Fail as e:
            return fail(e)
        return {"object": "list", "data": [{
            "id": pipeline.model_name, "object": "model", "created": int(time.time()), "owned_by": "taskfit",
            "task": pipeline.task.config.name, "strategy": pipeline.arm.strategy.label(),
            "base_model": pipeline.arm.model.label()}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        start = time.perf_counter()
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        row: dict[str, Any] = {"id": rid, "created": time.time(), "task_name": pipeline.task.config.name,
                               "strategy": pipeline.arm.strategy.label(), "model": pipeline.arm.model.label()}
        try:
            authorize(request)
            _json_content_type(request)
            body = await _body(request, cfg.max_body_bytes, cfg.body_timeout_s)
            req = await anyio.to_thread.run_sync(ChatRequest.model_validate_json, body)  # a 1 MB parse: off the loop
            if req.model != pipeline.model_name:
                raise _Fail(404, f"model {req.model!r} is not served here; this server serves "
                            f"{pipeline.model_name!r} (GET /v1/models)", code="model_not_found")
            header_id = request.headers.get(CONVERSATION_HEADER)
            if header_id is not None and not re.fullmatch(CONVERSATION_ID, header_id):
                raise _Fail(400, f"the {CONVERSATION_HEADER} header must be 1-200 characters of A-Z a-z 0-9 . _ : -")
            if header_id and req.conversation_id and header_id != req.conversation_id:
                raise _Fail(400, f"the {CONVERSATION_HEADER} header and the body's conversation_id differ")
            row.update(conversation_id=req.conversation_id or header_id, stream=int(req.stream))
            queued = time.perf_counter()
            out = await anyio.to_thread.run_sync(_answer, pipeline, req, row, queued, limiter=limiter["threads"])
        except _Fail as e:
            row.update(status=e.status, outcome=e.outcome, error=str(e))  # the log cuts it as the reply does
            return fail(e)
        except ClientDisconnect:  # nobody to answer: logged, not a server error
            row.update(status=400, outcome="client_disconnected", error="the client left before sending the body")
            return fail(_Fail(400, "the client left before sending the body"))
        except ValidationError as e:
            msg = _problems(e)
            row.update(status=400, outcome="bad_request", error=msg)
            return fail(_Fail(400, f"invalid request: {msg}"))
        except Exception as e:
            row.update(status=500, outcome="error", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            row.setdefault("status", 200)
            row.setdefault("outcome", "ok")
            row["latency_ms"] = (time.perf_counter() - start) * 1000
            if log is not None:
                await anyio.to_thread.run_sync(_log, log, row)
        cid = row.get("conversation_id")
        headers = {CONVERSATION_HEADER: cid} if cid else {}
        if req.stream:
            usage = out.usage if req.stream_options and req.stream_options.include_usage else None
            events = (f"data: {json.dumps(c)}\n\n" for c in chunks(rid, pipeline.model_name, out.content,
                                                                    out.tool_calls, out.finish_reason, usage))
            return StreamingResponse(_with_done(events), media_type="text/event-stream", headers=headers)
        extra = {"conversation_id": cid, "calls": out.trace.n_calls, "cache_hits": out.trace.cache_hits}
        return JSONResponse(completion(rid, pipeline.model_name, out.content, out.tool_calls, out.finish_reason,
                                       out.usage, extra), headers=headers)

    return app


def _answer(pipeline: Pipeline, req: ChatRequest, row: dict[str, Any], queued: float) -> ChatOutput:
    """Vet, map and answer one request (in a worker thread); raises _Fail for an error response."""
    row["queue_ms"] = (time.perf_counter() - queued) * 1000
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    choice = req.tool_choice.model_dump() if hasattr(req.tool_choice, "model_dump") else req.tool_choice
    try:
        chat = pipeline.chat_input(messages, tools, choice, row.get("conversation_id"))
    except Refused as e:
        raise _Fail(400, f"input refused: {e}", code=e.code, outcome="refused") from None
    except BadRequest as e:
        raise _Fail(400, str(e)) from None
    if pipeline.config.log_content:
        row["input"] = chat.user_text  # the request log stores it cut
    try:
        out = pipeline.answer(chat)
    except TaskfitError as e:  # e.g. a JSON input whose values the task's templates cannot render
        raise _Fail(400, str(e)) from None
    trace = out.trace
    row.update(tokens_in=int(trace.total("tokens_in")), tokens_out=int(trace.total("tokens_out")),
               calls=trace.n_calls, cache_hits=trace.cache_hits, tool_calls=len(out.tool_calls))
    if out.failed:
        row["error"] = trace.error
        logger.warning("request %s: model call failed: %s", row["id"], trace.error)
        raise _Fail(502, "the model call failed; the server log and the request log have the details", "server_error", "model_error",
                    "model_error")
    if pipeline.config.log_content:
        row["output"] = out.content if out.content is not None else json.dumps(out.tool_calls)
    if out.finish_reason == "content_filter":
        row["outcome"] = "output_refused"
    return out


def _problems(e: ValidationError) -> str:
    """An invalid request's problems, summarised: how many, and the first few (38,000 bad messages made a
    3 MB error body, stored whole in the request log)."""
    errors = e.errors(include_url=False, include_input=False)
    shown = "; ".join(cut(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}", PROBLEM_CHARS)
                      for err in errors[:SHOWN_PROBLEMS])
    if len(errors) <= SHOWN_PROBLEMS:
        return shown
    return f"{len(errors)} problems, the first {SHOWN_PROBLEMS}: {shown}"


def _json_content_type(request: Request) -> None:
    """Refuse a body not declared as JSON, as OpenAI's API does: a web page may send text/plain to any
    address without a CORS preflight, so accepting it leaves the Origin check as the only guard."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise _Fail(415, f"the request body must be sent as Content-Type: application/json, not "
                    f"{cut(kind, 100) or 'none'}", code="unsupported_media_type", outcome="bad_request")


def _log(log: RequestLog, row: dict[str, Any]) -> None:
    try:
        log.add(row)
    except Exception:  # a full disk must not turn an answered request into an error
        logger.exception("could not log request %s", row.get("id"))


async def _body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or actually sent) and with 408 when
    it takes more than ``timeout_s`` to arrive."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _Fail(413, f"request body is {declared} bytes; the limit is {limit}", code="body_too_large")
    body = bytearray()
    with anyio.move_on_after(timeout_s) as waited:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise _Fail(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
    if waited.cancelled_caught:
        raise _Fail(408, f"the request body did not arrive within {timeout_s:g} s", code="body_timeout",
                    outcome="client_timeout")
    if not body:
        raise _Fail(400, "empty request body: send a JSON chat-completions request")
    return bytes(body)


async def _with_done(events: Any) -> AsyncIterator[str]:
    for e in events:
        yield e
    yield "data: [DONE]\n\n"
