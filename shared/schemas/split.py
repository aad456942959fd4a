"""Cutting long text into parts WeCom accepts: at most 2048 bytes of UTF-8 each.

WeCom takes at most 2048 bytes of ``text`` or ``markdown`` content per message and truncates (or
refuses) beyond. A longer reply is sent as ordered parts instead. ``split_text`` is a pure
function: the parts concatenate to the input exactly, each is at most ``limit`` bytes of UTF-8,
and no part ends inside a character (nor, where avoidable, between a character and the
combining mark, variation selector or zero-width joiner that belongs to it).

Where to cut, in order of preference, within the longest prefix that fits: after a blank line
(paragraph), after a line break, after a sentence end (``。！？!?…;；`` and their closing
quotes, or ``.`` followed by a space), after a space, else at the last whole character. A
boundary counts only when the part keeps more than half the room, so a stray early line
break cannot produce a flood of tiny parts.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_PARTS", "PART_BYTES", "split_text"]

PART_BYTES: Final = 2048  # WeCom's limit for text and markdown content
MAX_PARTS: Final = 20  # parts of one request; a longer text is refused, not sent in 30 pieces

_BOUNDARIES: Final = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraph: a blank line, with the whitespace after it
    re.compile(r"\n"),  # line
    re.compile(r"(?:[。！？!?…；;]+[”’」』）)\]\"']*|\.[”’\"')\]]*(?=\s))\s*"),  # sentence
    re.compile(r"[ \t]+"),  # word
)
_JOINERS: Final = frozenset({"\u200d", "\u200c"})


def split_text(text: str, limit: int = PART_BYTES) -> list[str]:
    """``text`` as ordered parts of at most ``limit`` UTF-8 bytes that concatenate to it.

    Text within the limit comes back as the one part it is (an empty text too).
    """
    if limit < 4:
        raise ValueError("limit must be at least 4 bytes (one character of any kind)")
    parts: list[str] = []
    rest = text
    while len(rest.encode()) > limit:
        cut = _cut(rest, limit)
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    return parts


def _fit(text: str, limit: int) -> int:
    """How many leading characters of ``text`` fit in ``limit`` bytes of UTF-8."""
    used = 0
    for i, char in enumerate(text):
        used += len(char.encode())
        if used > limit:
            return i
    return len(text)


def _cut(text: str, limit: int) -> int:
    """Where to end the next part (a character index, 0 < result < len(text))."""
    fit = _fit(text, limit)
    window = text[:fit]
    floor = len(window.encode()) // 2
    for pattern in _BOUNDARIES:
        ends = [m.end() for m in pattern.finditer(window) if m.end() < len(text)]
        if ends and len(window[: ends[-1]].encode()) > floor:
            return ends[-1]
    return _character_cut(text, fit)


def _attached(char: str) -> bool:
    """A character that belongs to the one before it: combining mark, selector, joiner."""
    return (
        unicodedata.combining(char) > 0
        or char in _JOINERS
        or "\ufe00" <= char <= "\ufe0f"
        or unicodedata.category(char) == "Mn"
    )


def _character_cut(text: str, fit: int) -> int:
    """Cut at ``fit``, moved back (a little) so a character keeps its marks and joined parts."""
    cut = fit
    while cut > fit // 2 and (_attached(text[cut]) or text[cut - 1] in _JOINERS):
        cut -= 1
    return cut if cut > fit // 2 else max(fit, 1)
