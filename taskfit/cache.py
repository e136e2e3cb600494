"""Content-addressed cache of model calls: key = hash(model id, call kind, parameters, exact prompt).

The cache is also the audit log (every request and response is kept) and the resume point: a killed run
repeats no model call it had finished. The key hashes the whole request, so lookups are exact whatever its
size; the stored copy of a huge field (a 1 MB prompt) is its start, length and hash (``stored_request``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, text

from taskfit.db import upsert

FIELD_CHARS = 20_000  # a request field whose JSON is longer is stored as its start, length and hash


def call_key(model_id: str, kind: str, request: Any) -> str:
    fields = asdict(request)
    if not fields.get("tools"):  # requests without tools keep the keys they had before tools existed
        fields.pop("tools", None)
    payload = json.dumps({"model": model_id, "kind": kind, "request": fields}, sort_keys=True,
                         ensure_ascii=False, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()


def stored_request(request: Any) -> str:
    """The JSON kept in ``calls.request``: the request, each field longer than FIELD_CHARS (as JSON) replaced
    by ``{"truncated": true, "chars": n, "sha256": ..., "start": first FIELD_CHARS characters}``.

    Small fields (max_tokens, n, temperature...) stay as they are: the estimator reads them back."""
    fields = asdict(request)
    for name, value in fields.items():
        encoded = json.dumps(value, ensure_ascii=False, default=list)
        if len(encoded) > FIELD_CHARS:
            fields[name] = {"truncated": True, "chars": len(encoded),
                            "sha256": hashlib.sha256(encoded.encode()).hexdigest(), "start": encoded[:FIELD_CHARS]}
    return json.dumps(fields, ensure_ascii=False, default=list)


class CallCache:
    def __init__(self, eng: Engine):
        self.eng = eng

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self.eng.connect() as conn:
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                params = {f"k{i}": k for i, k in enumerate(chunk)}
                sql = f"SELECT key, response FROM calls WHERE key IN ({', '.join(':' + p for p in params)})"
                for key, response in conn.execute(text(sql), params):
                    found[key] = json.loads(response)
        return found

    def put_many(self, rows: list[tuple[str, str, str, Any, dict[str, Any]]]) -> None:
        """rows: (key, model_id, kind, request dataclass, response dict)."""
        if not rows:
            return
        now = time.time()
        with self.eng.begin() as conn:
            upsert(conn, "calls", [{"key": k, "model_id": m, "kind": kind, "created": now,
                                    "request": stored_request(req),
                                    "response": json.dumps(resp, ensure_ascii=False)}
                                   for k, m, kind, req, resp in dict((r[0], r) for r in rows).values()],
                   key=("key",))

    def count(self) -> int:
        with self.eng.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
