"""Credentials: what counts as one in a server URL, and keeping secret values out of stored or printed text.

A model entry takes its key from an environment variable (``api_key_env``, ``headers_env``), never from the
task file: the task file is saved with every run and shown in reports, and a URL also becomes part of the
model id, the call-cache key and error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from taskfit.errors import TaskfitError

# Query parameter names that carry a key, lowercased with "-" and "_" removed; names ending in one of the
# suffixes count too (x-api-key, client_secret, sessiontoken, ...).
_KEY_NAMES = frozenset({"key", "apikey", "auth", "authorization", "bearer", "code", "password", "passwd", "pass",
                        "pwd", "secret", "sig", "signature", "token", "credential", "credentials", "jwt"})
_KEY_SUFFIXES = ("key", "token", "secret", "password", "signature", "credential", "credentials")
HOW_TO = ("put the key in an environment variable and name it with `api_key_env` (sent as a Bearer token) "
          "or `headers_env: {<header>: <VARIABLE>}` (sent as that header)")
MASK = "***"


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be a server URL, or None. The answer never repeats any part of the URL: a part
    that looks harmless may still be a secret."""
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):  # urlsplit silently drops tabs and newlines
        return "contains a space or control character"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port (whose message quotes the netloc)
    except ValueError:
        return "is not a valid URL (expected http(s)://host[:port]/path)"
    if "@" in parts.netloc:
        return f"holds credentials (user:password@); {HOW_TO}"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must start with http:// or https:// and name a host"
    keys = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _is_key_name(name)]
    if keys:
        return f"holds a credential (the query parameter {keys[0]!r}); {HOW_TO}"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return ("must not have a query string or fragment: they may carry a credential, and the API path "
                f"(/chat/completions) is appended to the URL; {HOW_TO}")
    if re.search(r"[;=]|%3[bd]", parts.path, re.IGNORECASE):  # matrix parameters: /v1;token=...
        return f"must not have path parameters (;name=value): they may carry a credential; {HOW_TO}"
    return None


def check_url(url: str, field: str) -> None:
    """Raise a TaskfitError naming ``field`` when ``url`` may not be a server URL (see ``url_problem``)."""
    if problem := url_problem(url):
        raise TaskfitError(f"{field} {problem}", field=field)


def _is_key_name(name: str) -> bool:
    norm = re.sub(r"[-_.\s]", "", name.lower())
    return norm in _KEY_NAMES or norm.endswith(_KEY_SUFFIXES)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):  # "Bearer <key>" before "<key>"
        if secret:
            text = text.replace(secret, MASK)
    return text
