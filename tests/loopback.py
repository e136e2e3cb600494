"""A loopback HTTP server for fake model servers in tests: every POST goes to ``fake.handle(path, body)``,
which returns (status, payload); a string payload is sent as plain text (vLLM's LoRA endpoints), anything else
as JSON. Run it with ``conftest.serving(httpd)``."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Fake(Protocol):
    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, Any]: ...


def loopback(fake: Fake) -> tuple[ThreadingHTTPServer, str]:
    """A server on a free loopback port that answers with ``fake``, and its OpenAI-style base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.fake = fake  # type: ignore[attr-defined]
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; avoid delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        status, payload = self.server.fake.handle(self.path, body)  # type: ignore[attr-defined]
        text = isinstance(payload, str)
        raw = (payload if text else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
