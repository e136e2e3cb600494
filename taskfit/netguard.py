"""Who may talk to a taskfit web app: loopback addresses, the Host header check against DNS rebinding.

`taskfit serve` and `taskfit ui` without a token trust that only this machine can reach them. A web page
on another site can still make the browser send requests to 127.0.0.1, either directly (the request then
carries that site's ``Origin``) or through a host name it re-points at 127.0.0.1 (DNS rebinding: the
request then carries that name in ``Host``). Both are refused here unless the operator named the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (bracketed or not): addresses other machines cannot reach."""
    host = host.strip().lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always the loopback interface
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # any other name may resolve to anything
        return False


def host_name(value: str) -> str:
    """The host of a ``Host`` header or URL authority without its port: ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") > 1:  # a bare IPv6 address
        return value
    return value.split(":", 1)[0].rstrip(".")


def host_allowed(host: str, allowed: Sequence[str] = ()) -> bool:
    """Whether a request for ``host`` (a Host header value) is for this machine or an operator-named host."""
    name = host_name(host)
    return bool(name) and (is_loopback(name) or name in {host_name(a) for a in allowed})


def origin_host(url: str) -> str | None:
    """The host (with port) of an ``Origin`` or ``Referer`` value; None when it has none (``null``)."""
    return urlsplit(url.strip()).netloc or None


class HostGuard:
    """ASGI middleware: refuse requests whose ``Host``, or ``Origin`` when sent, is not an allowed host.

    Args:
        allowed: host names (a port is ignored) accepted besides the loopback ones.
        refuse: makes the 403 response from a message, in the app's own error format.
    """

    def __init__(self, app: ASGIApp, allowed: Sequence[str] = (), refuse: Callable[[str], Response] | None = None):
        self.app = app
        self.allowed = tuple(allowed)
        self.refuse = refuse or (lambda message: Response(message, 403, media_type="text/plain"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            message = self.check(dict(scope["headers"]))
            if message:
                await self.refuse(message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, headers: dict[bytes, bytes]) -> str | None:
        """Why a request with these headers is refused, or None."""
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.allowed):
            return (f"Host {host!r} is not served here: only loopback addresses are accepted (a page on another "
                    "site may have pointed its name at this machine); the operator can allow a name with "
                    "--allow-host")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and not host_allowed(origin_host(origin) or "", self.allowed):  # "null" too: a sandboxed page
            return f"requests from the web page at {origin!r} are refused (cross-origin)"
        return None
