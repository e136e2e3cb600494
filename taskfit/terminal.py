"""Text for the terminal: model output and data reach it without control characters.

A model's answer, a data row or a stored trace may hold escape sequences: ESC and the C1 controls start
commands a terminal obeys (``ESC ]8;;URL ESC \\`` makes a hyperlink, others retitle the window, move the
cursor or rewrite what is already on screen), and the bidirectional overrides make text read differently
from what it is. Every console the CLI prints with is made here, and shows such a character as its escape
(``\\x1b``, ``\\u202e``) instead of sending it; the console's own styling is added after, so colours stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.segment import Segment

# C0 but tab and newline, DEL, C1, and the bidirectional marks, embeddings, overrides and isolates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """``text`` with every control or bidi-override character written as its escape (``\\x1b``)."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


class _Safe:
    """A renderable drawn as ``inner`` is, with the text of its segments passed through ``safe_text``.

    Rich measures these characters as zero cells wide, so a row holding them comes out a few cells wider
    than its table; that is the visible mark that it held them."""

    def __init__(self, inner: RenderableType):
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for seg in console.render(self.inner, options):
            # control segments are rich's own cursor movements (live progress), not text
            yield seg if seg.control or not _UNSAFE.search(seg.text) else Segment(safe_text(seg.text), seg.style)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.inner)


class _SafeHook:
    """A rich render hook: every renderable a console prints goes through ``_Safe``."""

    def process_renderables(self, renderables: list[Any]) -> list[Any]:
        return [_Safe(r) for r in renderables]


def console(*, stderr: bool = False, markup: bool = False, **options: Any) -> Console:
    """A rich Console for the CLI that never sends control characters from the text it prints.

    ``markup`` stays off unless a caller writes its own markup: task, model and example text is printed as
    given ("[/INST]" is not a closing tag)."""
    c = Console(stderr=stderr, markup=markup, **options)
    c.push_render_hook(_SafeHook())
    return c

