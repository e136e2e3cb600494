"""Regex: the whole (stripped) prediction matches a pattern; the gold answer is not consulted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.metrics import REQUIRED, read_options

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@dataclass(frozen=True)
class RegexMatch:
    pattern: re.Pattern[str]
    binary: bool = True

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        return float(self.pattern.fullmatch(prediction.strip()) is not None)


def compile_pattern(pattern: str, flags: str) -> re.Pattern[str]:
    """Compile ``pattern`` with flag letters from "imsx"; errors name the metric option."""
    bits = 0
    for letter in flags:
        if letter not in _FLAGS:
            raise TaskfitError(f"metric 'regex': unknown flag {letter!r} in flags {flags!r} (use any of "
                               f"{''.join(_FLAGS)})", field="metrics.regex.flags")
        bits |= _FLAGS[letter]
    try:
        return re.compile(pattern, bits)
    except re.error as e:
        raise TaskfitError(f"metric 'regex': pattern {pattern!r} is not a valid regex: {e}",
                           field="metrics.regex.pattern") from None


def create(**options: Any) -> RegexMatch:
    """Options: pattern (required), flags (letters from "imsx", default none)."""
    o = read_options("regex", options, pattern=REQUIRED, flags="")
    if not isinstance(o["pattern"], str):
        raise TaskfitError("metric 'regex': option 'pattern' must be a string", field="metrics.regex.pattern")
    return RegexMatch(pattern=compile_pattern(o["pattern"], o["flags"]))
