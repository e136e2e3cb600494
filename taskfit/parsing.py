"""Reading an answer out of a model generation: a label, a regex capture, a JSON value or the text."""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from taskfit.errors import TaskfitError
from taskfit.taskfile import ParseConfig


@dataclass(frozen=True)
class ParseResult:
    value: str | None  # None when nothing usable was found
    failed: bool


FAILED = ParseResult(value=None, failed=True)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# "Answer: x", "Final answer - x", "Sentiment: x", "The answer is x": a short run of words before the answer.
_PREFIX = re.compile(r"^\s*(?:(?:the\s+)?(?:final\s+)?answer\s+is\b|[^\W\d_][\w ]{0,40}?\s*[:=])\s*", re.I)
_JSON_START = re.compile(r"[{\[]")
_DECODER = json.JSONDecoder()
_INDEX = re.compile(r"-?[0-9]+")  # a list index in a dotted path (not "--0", not "²", which isdigit accepts)


def _strip_punctuation(text: str) -> str:
    """Drop ASCII and Unicode punctuation (curly quotes, dashes) the way SQuAD drops ASCII punctuation."""
    return "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))


def _basic(text: str) -> str:
    """Lowercase, drop punctuation and collapse whitespace, keeping articles."""
    return " ".join(_strip_punctuation(text.lower()).split())


def normalize(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", _strip_punctuation(text.lower())).split())


def answer_key(text: str) -> str:
    """``normalize(text)``, or the article-keeping form when that is empty (so gold "A" is not "")."""
    return normalize(text) or _basic(text)


def final_line(text: str) -> str:
    """The last non-empty line of ``text`` (the whole text when there is none)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


def _find_phrase(phrase: str, text: str) -> int:
    """Start index of ``phrase`` in space-separated ``text`` as a whole word sequence, or -1."""
    m = re.search(rf"(?<!\S){re.escape(phrase)}(?!\S)", text)
    return m.start() if m else -1


def parse_label(text: str, labels: list[str], label_aliases: dict[str, list[str]]) -> ParseResult:
    """Map ``text`` to one of ``labels`` (via aliases too); the earliest mention wins when not an exact match."""
    spellings = [(label, label) for label in labels]
    spellings += [(alias, label) for label, aliases in label_aliases.items() for alias in aliases]
    # Labels like "A"/"An" vanish under article removal; then keep articles for every spelling and the text.
    norm = _basic if any(not normalize(s) for s, _ in spellings) else normalize
    keys = [(norm(s), label) for s, label in spellings if norm(s)]
    for candidate in (text, _PREFIX.sub("", text, count=1)):
        whole = norm(candidate)
        for key, label in keys:
            if key == whole:
                return ParseResult(value=label, failed=False)
    normalized = norm(text)
    best: tuple[int, int, str] | None = None
    for key, label in keys:
        pos = _find_phrase(key, normalized)
        # Earliest position first, then the longer spelling ("very positive" over "positive").
        if pos >= 0 and (best is None or (pos, -len(key)) < best[:2]):
            best = (pos, -len(key), label)
    return ParseResult(value=best[2], failed=False) if best else FAILED


def parse_regex(text: str, pattern: str) -> ParseResult:
    """The first match of ``pattern``: group 1 when the pattern has groups, else the whole match."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise TaskfitError(f"parse.pattern {pattern!r} is not a valid regex: {e}", field="parse.pattern") from None
    for m in rx.finditer(text):
        value = m.group(1) if rx.groups else m.group(0)
        if value is not None:  # an optional group that did not take part is no answer
            return ParseResult(value=value.strip(), failed=False)
    return FAILED


def iter_json(text: str) -> Iterator[dict[str, Any] | list[Any]]:
    """Every top-level JSON object or array embedded in ``text`` (fences and prose around it are skipped)."""
    pos = 0
    while m := _JSON_START.search(text, pos):
        try:
            obj, end = _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError:
            pos = m.start() + 1
            continue
        yield obj
        pos = end  # values nested inside this one are not separate candidates


def extract_json(text: str) -> dict[str, Any] | list[Any] | None:
    """The first JSON object or array in ``text``, or None."""
    return next(iter_json(text), None)


def lookup(obj: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path ("a.b", "items.0.name") into ``obj``; returns (found, value)."""
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and _INDEX.fullmatch(part) and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return False, None
    return True, obj


def as_text(value: Any) -> str:
    """Strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_json(text: str, field: str | None) -> ParseResult:
    """The first JSON value in ``text`` (as JSON text), or its ``field`` (dotted path) as text."""
    for obj in iter_json(text):
        if field is None:
            return ParseResult(value=json.dumps(obj, ensure_ascii=False), failed=False)
        found, value = lookup(obj, field)
        if found:
            return ParseResult(value=as_text(value), failed=False)
    return FAILED


# Lead-ins small chat models put before a short answer: "The answer to this question is: "X"".
_LEAD_IN = re.compile(r"^\s*(?:the\s+)?(?:final\s+|correct\s+|short\s+)?answer\b(?:\s+to\s+(?:this|the)\s+question)?"
                      r"(?:\s+is)?\s*[:\-]?\s*", re.I)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


def parse_text(text: str) -> ParseResult:
    """The answer text without a lead-in ("The answer is: ...") or wrapping quotes; failed when empty."""
    value = text.strip()
    stripped = _LEAD_IN.sub("", value, count=1)
    if stripped != value and stripped:
        value = stripped
        if value[:1] in _QUOTES and value[1:].find(value[0]) > 0 and value[0] not in "'`":
            value = value[1:1 + value[1:].find(value[0])]  # the quoted answer only
        elif value[:1] in "\u201c" and "\u201d" in value:
            value = value[1:value.index("\u201d")]
    value = value.strip().strip(_QUOTES).strip()
    if value.endswith(".") and value.count(".") == 1:  # "7." / "London." but not "U.S."
        value = value[:-1].rstrip()
    return ParseResult(value=value, failed=False) if value else FAILED


def parse_output(text: str, config: ParseConfig, labels: list[str] | None,
                 label_aliases: dict[str, list[str]]) -> ParseResult:
    """Apply the task's parse settings to one generation."""
    if config.final_line:
        text = final_line(text)
    kind = config.type
    if kind == "auto":
        kind = "label" if labels else "text"
    if kind == "label":
        if not labels:
            raise TaskfitError("parse.type 'label' needs the task's `labels`", field="parse.type")
        return parse_label(text, labels, label_aliases)
    if kind == "regex":
        if not config.pattern:
            raise TaskfitError("parse.type 'regex' needs parse.pattern", field="parse.pattern")
        return parse_regex(text, config.pattern)
    if kind == "json":
        return parse_json(text, config.field)
    return parse_text(text)
