"""A fast path for the flat XML WeCom sends: ``<xml>`` holding only text elements.

Almost every callback body and decrypted message is ``<xml>`` with one level of children,
each plain text or one CDATA section (``<Content><![CDATA[…]]></Content>``). For those,
``read_flat`` gives the children as (name, text) pairs from one regular expression per
element, without building an expat parser. It accepts a strict subset of XML and returns
None for anything else (a prolog, a comment, an attribute, an entity or character reference,
nesting, mixed content, an empty ``<xml>``, a character XML forbids, a carriage return
that expat would normalise, text that is not UTF-8…): the caller then runs the expat reader,
which decides. So whatever it accepts is well-formed XML that expat reads to the same pairs,
and no DOCTYPE, entity or external reference can get through it.
"""

from __future__ import annotations

import re

__all__ = ["read_flat"]

# One child: optional whitespace, <Name>, one CDATA section or plain text (no markup, no
# reference, no "]" so never "]]>"), </Name>. CDATA content stops at the first "]]>".
_CHILD = re.compile(
    rb"[ \t\n]*<([A-Za-z_][A-Za-z0-9_]{0,63})>"
    rb"(?:<!\[CDATA\[([^\]]*(?:\](?!\]>)[^\]]*)*)\]\]>|([^<&\]]*))"
    rb"</\1>"
)
_END = re.compile(rb"[ \t\n]*</xml>[ \t\n]*\Z")
# Characters XML 1.0 forbids, and CR, which expat turns into LF: leave those to expat. Looked
# for in the UTF-8 bytes (a regular expression over a whole base64 Encrypt costs several µs; a
# ``translate`` that deletes them costs a tenth): the control characters are single bytes no
# multi-byte sequence contains, U+FFFE and U+FFFF are EF BF BE / EF BF BF, and surrogates never
# get past the strict UTF-8 decoding that follows.
_CONTROL = bytes([*range(0x00, 0x09), *range(0x0B, 0x20)])  # every C0 control but TAB and LF
_NONCHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")


def read_flat(data: bytes) -> list[tuple[str, str]] | None:
    """The children of a flat ``<xml>`` document in order, or None: not for this fast path."""
    if not data.startswith(b"<xml>"):
        return None
    pairs: list[tuple[str, str]] = []
    pos, child, end = 5, _CHILD.match, _END.match
    while (found := child(data, pos)) is not None:
        name, cdata, text = found.groups()
        raw = text if cdata is None else cdata
        if len(raw.translate(None, _CONTROL)) != len(raw):
            return None
        if not raw.isascii() and (_NONCHARACTERS[0] in raw or _NONCHARACTERS[1] in raw):
            return None
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        pairs.append((name.decode("ascii"), value))
        pos = found.end()
    if not pairs or end(data, pos) is None:
        return None
    return pairs
