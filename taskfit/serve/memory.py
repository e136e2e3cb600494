"""Conversation memory: the turns of a conversation, stored by id, trimmed to a size policy when read."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from taskfit.backends import Message
from taskfit.serve.config import MemoryConfig


def estimate_tokens(text_: str) -> int:
    """A tokenizer-free estimate (about four characters per token for English): the budget is a policy,
    not an exact count, and the same estimate must hold for every backend."""
    return (len(text_) + 3) // 4


def trim(messages: list[Message], max_turns: int, max_tokens: int) -> list[Message]:
    """The newest whole turns (a user message and what followed it) within both limits, oldest first."""
    turns: list[list[Message]] = []
    for m in messages:
        if m["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(m)
    kept: list[list[Message]] = []
    budget = max_tokens
    for turn in reversed(turns[-max_turns:] if max_turns else []):
        cost = sum(estimate_tokens(str(m.get("content") or "")) for m in turn)
        if cost > budget:
            break
        budget -= cost
        kept.append(turn)
    return [m for turn in reversed(kept) for m in turn]


class ConversationMemory:
    """Reads and appends a conversation's messages in the `conversations` table."""

    def __init__(self, eng: Engine, config: MemoryConfig):
        self.eng = eng
        self.config = config

    def history(self, conversation_id: str) -> list[Message]:
        """The stored turns the size policy keeps, oldest first.

        Reads no more than the policy can keep: the newest ``2 * max_turns`` messages (a turn is stored as a
        user message and its reply), and no message longer than the whole token budget (it could never be
        kept, so a stand-in of that length takes its place and ``trim`` drops it with everything older).
        """
        cfg = self.config
        if not cfg.max_turns:
            return []
        longest = 4 * cfg.max_tokens  # characters: estimate_tokens(text) <= max_tokens
        with self.eng.connect() as conn:
            rows = conn.execute(text(
                "SELECT seq, role, CASE WHEN length(content) <= :longest THEN content END FROM conversations "
                "WHERE conversation_id = :c ORDER BY seq DESC LIMIT :n"),
                {"c": conversation_id, "n": 2 * cfg.max_turns, "longest": longest}).all()
        messages: list[Message] = [{"role": role, "content": "x" * (longest + 1) if content is None else content}
                                   for _, role, content in reversed(rows)]
        return trim(messages, cfg.max_turns, cfg.max_tokens)

    def append(self, conversation_id: str, messages: list[Message]) -> None:
        """Add messages at the end of the conversation (one transaction: a turn is stored whole or not at all),
        and delete those older than ``history`` reads."""
        now = time.time()
        longest = 4 * self.config.max_tokens
        with self.eng.begin() as conn:
            for m in messages:
                content = str(m.get("content") or "")
                # a message over the whole budget is never shown again: stored cut, still over the budget
                content = content[:longest + 1]
                # seq computed inside the insert: SQLite serialises writers, so concurrent turns never collide
                conn.execute(text("INSERT INTO conversations (conversation_id, seq, role, content, created) "
                                  "SELECT :c, COALESCE(MAX(seq), -1) + 1, :r, :t, :now FROM conversations "
                                  "WHERE conversation_id = :c"),
                             {"c": conversation_id, "r": m["role"], "t": content, "now": now})
            conn.execute(text("DELETE FROM conversations WHERE conversation_id = :c AND seq <= "
                              "(SELECT MAX(seq) FROM conversations WHERE conversation_id = :c) - :keep"),
                         {"c": conversation_id, "keep": 2 * self.config.max_turns})

    def forget(self, conversation_id: str) -> int:
        """Delete a conversation; returns how many messages it had."""
        with self.eng.begin() as conn:
            return conn.execute(text("DELETE FROM conversations WHERE conversation_id = :c"),
                                {"c": conversation_id}).rowcount
