"""Vetting hooks: refuse text that is too long or matches a blocked pattern, and redact personal data.

Input is vetted before it reaches the model, the conversation memory or the request log; output before it
reaches the client. Patterns are compiled once, when the server starts, so a bad regex stops the start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taskfit.errors import TaskfitError
from taskfit.serve.config import REDACTIONS, VettingRules


class Refused(Exception):
    """Text the rules do not allow; the message says which rule, never the text itself."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Vetter:
    """Compiled rules for one direction (input or output)."""

    direction: str
    max_chars: int | None
    blocked: tuple[re.Pattern[str], ...]
    redactions: tuple[tuple[str, re.Pattern[str]], ...]  # (replacement, pattern)

    def vet(self, text: str) -> str:
        """The text with personal data redacted; raises Refused when a rule forbids it."""
        if self.max_chars is not None and len(text) > self.max_chars:
            raise Refused(f"{self.direction} is {len(text)} characters; the limit is {self.max_chars}",
                          f"{self.direction}_too_long")
        for pattern in self.blocked:
            if pattern.search(text):
                raise Refused(f"{self.direction} matches a blocked pattern ({pattern.pattern!r})",
                              f"{self.direction}_blocked")
        for replacement, pattern in self.redactions:
            text = pattern.sub(replacement, text)
        return text


def build_vetter(rules: VettingRules, direction: str, where: str = "serve.vetting") -> Vetter:
    """Compile ``rules``; an invalid regex is a TaskfitError naming its key."""
    blocked = tuple(_compile(p, f"{where}.{direction}.blocked[{i}]") for i, p in enumerate(rules.blocked))
    redactions = [(f"[{name.upper()}]", _compile(REDACTIONS[name], name)) for name in rules.redact]
    redactions += [(f"[{name.upper()}]", _compile(p, f"{where}.{direction}.patterns.{name}"))
                   for name, p in rules.patterns.items()]
    return Vetter(direction, rules.max_chars, blocked, tuple(redactions))


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise TaskfitError(f"{where}: invalid regular expression {pattern!r}: {e}", field=where) from None
