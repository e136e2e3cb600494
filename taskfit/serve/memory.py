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
        """The stored turns the size policy keeps, oldest first."""
        with self.eng.connect() as conn:
            rows = conn.execute(text("SELECT role, content FROM conversations WHERE conversation_id = :c ORDER BY seq"),
                                {"c": conversation_id}).all()
        return trim([{"role": r, "content": c} for r, c in rows], self.config.max_turns, self.config.max_tokens)

    def append(self, conversation_id: str, messages: list[Message]) -> None:
        """Add messages at the end of the conversation (one transaction: a turn is stored whole or not at all)."""
        now = time.time()
        with self.eng.begin() as conn:
            for m in messages:
                # seq computed inside the insert: SQLite serialises writers, so concurrent turns never collide
                conn.execute(text("INSERT INTO conversations (conversation_id, seq, role, content, created) "
                                  "SELECT :c, COALESCE(MAX(seq), -1) + 1, :r, :t, :now FROM conversations "
                                  "WHERE conversation_id = :c"),
                             {"c": conversation_id, "r": m["role"], "t": str(m.get("content") or ""), "now": now})

    def forget(self, conversation_id: str) -> int:
        """Delete a conversation; returns how many messages it had."""
        with self.eng.begin() as conn:
            return conn.execute(text("DELETE FROM conversations WHERE conversation_id = :c"),
                                {"c": conversation_id}).rowcount
