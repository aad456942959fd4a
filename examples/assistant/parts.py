"""Gathering a streamed answer into the parts sent to the member.

A model streams a few characters at a time; a member wants whole paragraphs, the first one
early, and not a message per line (WeCom lets an app send a member about 30 messages a minute,
and each part counts). ``Parts`` therefore:

- sends the first complete paragraph at once (the member sees the answer start);
- after it, joins paragraphs until a part has at least ``min_bytes``, so short paragraphs
  travel together;
- never makes a part over ``max_bytes`` (below WeCom's 2048-byte limit): a longer paragraph is
  cut at a line break, else after a sentence, else at a character boundary.

Parts are in answer order, and joined with a blank line they give back the answer (whitespace
at the cuts aside).
"""

from __future__ import annotations

import re

__all__ = ["Parts", "cut_point", "split_text"]

_PARAGRAPH = re.compile(r"\n[ \t\r]*\n")
_SENTENCE_ENDS = "。！？!?；;.…"


def cut_point(text: str, limit: int) -> int:
    """Index at which to cut ``text`` so the head is at most ``limit`` UTF-8 bytes and ends well."""
    head = text.encode()[:limit].decode(errors="ignore")
    if len(head) >= len(text):
        return len(text)
    floor = len(head) // 2  # cut nicely only if it keeps at least half the room
    newline = head.rfind("\n")
    if newline > floor:
        return newline + 1
    sentence = max(head.rfind(c) for c in _SENTENCE_ENDS)
    if sentence > floor:
        return sentence + 1
    return max(1, len(head))


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes each, cut by :func:`cut_point`."""
    pieces = []
    while text:
        at = cut_point(text, limit)
        piece, text = text[:at].strip(), text[at:]
        if piece:
            pieces.append(piece)
    return pieces


class Parts:
    """Feed it streamed text; it hands back the parts ready to send."""

    def __init__(self, *, max_bytes: int = 1800, min_bytes: int = 300) -> None:
        if not 16 <= min_bytes <= max_bytes:
            raise ValueError("16 <= min_bytes <= max_bytes")
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self._tail = ""  # text of the paragraph still being written
        self._ready: list[str] = []  # finished paragraphs (each within max_bytes) not sent yet
        self.sent = 0  # parts handed out so far

    def feed(self, piece: str) -> list[str]:
        """Take more of the answer; return the parts now ready, in order."""
        self._tail += piece
        while match := _PARAGRAPH.search(self._tail):
            self._add(self._tail[: match.start()])
            self._tail = self._tail[match.end() :]
        if len(self._tail.encode()) > self.max_bytes:  # a paragraph longer than a part
            at = cut_point(self._tail, self.max_bytes)
            self._add(self._tail[:at])
            self._tail = self._tail[at:]
        return self._take(final=False)

    def finish(self) -> list[str]:
        """The answer is complete: return every part not yet handed out."""
        self._add(self._tail)
        self._tail = ""
        return self._take(final=True)

    def _add(self, paragraph: str) -> None:
        self._ready.extend(split_text(paragraph.strip(), self.max_bytes))

    def _take(self, *, final: bool) -> list[str]:
        out: list[str] = []
        current = ""
        for paragraph in self._ready:
            joined = f"{current}\n\n{paragraph}" if current else paragraph
            if len(joined.encode()) > self.max_bytes:
                out.append(current)
                joined = paragraph
            current = joined
            if self.sent + len(out) == 0:  # the first paragraph goes at once
                out.append(current)
                current = ""
        if current and (final or len(current.encode()) >= self.min_bytes):
            out.append(current)
            current = ""
        self._ready = [current] if current else []
        self.sent += len(out)
        return out
