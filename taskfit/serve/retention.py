"""Retention: what `taskfit serve` stores (conversations, its request log, call-cache entries) expires.

Without it a long-running server's database only grows. Limits come from the task file's `serve.retention`;
the server prunes when it starts and then every ``every_s`` seconds, from a worker thread. Each table is cut
by age and then by count; a count cut keeps the newest rows (ties on ``created`` may keep a few more).
The request log is pruned for this task only, and the call cache for the served model only: rows that
other tasks and other models wrote are not this server's to delete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from taskfit.serve.config import RetentionConfig

DAY_S = 86_400.0
logger = logging.getLogger("taskfit.serve")


class Retention:
    """Prunes one server's tables to ``config``."""

    def __init__(self, eng: Engine, config: RetentionConfig, *, task_name: str, model_id: str,
                 clock: Callable[[], float] = time.time):
        self.eng, self.config = eng, config
        self.task_name, self.model_id = task_name, model_id
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None

    def due(self) -> bool:
        """Whether ``every_s`` has passed since the last prune (or none has run yet)."""
        return self._last is None or self.clock() - self._last >= self.config.every_s

    def maybe_prune(self) -> dict[str, int] | None:
        """Prune when due and no other thread is pruning; errors are logged, never raised to a request."""
        if not self.due() or not self._lock.acquire(blocking=False):
            return None
        try:
            return self.prune()
        except Exception:  # a locked or full database must not fail the request that triggered the prune
            logger.exception("pruning the serve tables failed")
            return None
        finally:
            self._lock.release()

    def prune(self) -> dict[str, int]:
        """Delete what the limits do not keep; returns rows deleted per table."""
        c, now = self.config, self.clock()
        self._last = now
        with self.eng.begin() as conn:
            idle = conn.execute(text(
                "DELETE FROM conversations WHERE conversation_id IN (SELECT conversation_id FROM conversations "
                "GROUP BY conversation_id HAVING MAX(created) < :cut)"),
                {"cut": now - c.conversation_days * DAY_S}).rowcount
            conversations = idle + _keep_newest(conn, "conversations", "1 = 1", {}, c.conversation_messages)
            scope = {"t": self.task_name}
            requests = conn.execute(text("DELETE FROM requests WHERE task_name = :t AND created < :cut"),
                                    {**scope, "cut": now - c.request_log_days * DAY_S}).rowcount
            requests += _keep_newest(conn, "requests", "task_name = :t", scope, c.request_log_rows)
            scope = {"m": self.model_id}
            calls = conn.execute(text("DELETE FROM calls WHERE model_id = :m AND created < :cut"),
                                 {**scope, "cut": now - c.cache_days * DAY_S}).rowcount
            calls += _keep_newest(conn, "calls", "model_id = :m", scope, c.cache_entries)
        pruned = {"conversations": conversations, "requests": requests, "calls": calls}
        if any(pruned.values()):
            logger.info("retention: deleted %s", pruned)
        return pruned


def _keep_newest(conn, table: str, where: str, params: dict, keep: int) -> int:
    """Delete the rows of ``table`` matching ``where`` older than its ``keep`` newest; returns how many."""
    cutoff = conn.execute(text(f"SELECT created FROM {table} WHERE {where} ORDER BY created DESC "
                               "LIMIT 1 OFFSET :last"), {**params, "last": keep - 1}).scalar()  # the keep-th newest
    if cutoff is None:
        return 0
    return conn.execute(text(f"DELETE FROM {table} WHERE {where} AND created < :cut"),
                        {**params, "cut": cutoff}).rowcount
