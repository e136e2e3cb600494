"""How `taskfit serve` runs its app under uvicorn, with a deadline for each request's headers.

uvicorn bounds the wait between requests (``timeout_keep_alive``) but not the wait for a request's headers:
a client that sends one header byte every few seconds holds its connection, and a few hundred such clients
hold them all. The protocol below closes a connection whose next request has not finished its headers
within ``header_timeout_s`` (the app itself bounds the body: ``body_timeout_s``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from taskfit.serve.config import ServeConfig

TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def with_header_deadline(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``base`` (h11 or httptools: both start a request cycle once the headers
    are complete), closing a connection whose request headers take longer than ``seconds``."""

    class HeaderDeadline(base):  # type: ignore[misc,valid-type]
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that sends nothing at all is bounded too

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if self._deadline is None and idle:
                self._arm()  # the first bytes of a kept-alive connection's next request: its headers' deadline
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()  # between requests uvicorn's keep-alive timeout applies
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._armed_cycle = self.cycle
            self._deadline = self.loop.call_later(seconds, self._deadline_passed)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _deadline_passed(self) -> None:
            self._deadline = None
            started = self.cycle is not self._armed_cycle  # a request's headers arrived since the deadline was set
            busy = self.cycle is not None and not self.cycle.response_complete
            if started or busy or self.transport.is_closing():
                return
            self.transport.write(TIMEOUT_REPLY)
            self.transport.close()

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline


def uvicorn_config(app: Any, config: ServeConfig, host: str, port: int, **kw: Any) -> uvicorn.Config:
    """The uvicorn settings `taskfit serve` runs ``app`` with; ``kw`` passes more (log_level...)."""
    return uvicorn.Config(app, host=host, port=port, http=with_header_deadline(AutoHTTPProtocol, config.header_timeout_s),
                          **kw)
