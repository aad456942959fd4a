"""A fast path for the flat XML WeCom sends: ``<xml>`` holding only text elements.

Almost every callback body and decrypted message is ``<xml>`` with one level of children,
each plain text or one CDATA section (``<Content><![CDATA[…]]></Content>``). For those,
``read_flat`` gives the children as (name, text) pairs without building an expat parser: one
regular expression checks the whole document, another lists its children. It accepts a strict
subset of XML and returns None for anything else (a prolog, a comment, an attribute, an entity
or character reference, nesting, mixed content, an empty ``<xml>``, a character XML forbids, a
carriage return that expat would normalise, text that is not UTF-8…): the caller then runs the
expat reader, which decides. So whatever it accepts is well-formed XML that expat reads to the
same pairs, and no DOCTYPE, entity or external reference can get through it.
"""

from __future__ import annotations

import re

__all__ = ["read_flat"]

# One child: optional whitespace, <Name>, one CDATA section or plain text (no markup, no
# reference, no "]" so never "]]>"), </Name>. CDATA content stops at the first "]]>".
_CHILD = (
    r"[ \t\n]*<([A-Za-z_][A-Za-z0-9_]{0,63})>"
    r"(?:<!\[CDATA\[([^\]]*(?:\](?!\]>)[^\]]*)*)\]\]>|([^<&\]]*))"
    r"</\1>"
)
# The whole document: <xml>, one or more children (each matched once: an atomic group, so a
# document that fails is never re-split), </xml>.
_DOCUMENT = re.compile(rf"<xml>(?>{_CHILD})+[ \t\n]*</xml>[ \t\n]*")
_CHILDREN = re.compile(_CHILD)
# Characters XML 1.0 forbids, and CR, which expat turns into LF: leave those to expat. Looked
# for in the UTF-8 bytes, once for the whole document (a regular expression over a base64
# Encrypt costs several µs; a ``translate`` that deletes them a tenth): the control characters
# are single bytes no multi-byte sequence contains, U+FFFE and U+FFFF are EF BF BE / EF BF BF,
# and surrogates never get past the strict UTF-8 decoding. Between the children only spaces,
# tabs and newlines are allowed, so a character found anywhere is one in some text.
_CONTROL = bytes([*range(0x00, 0x09), *range(0x0B, 0x20)])  # every C0 control but TAB and LF
_NONCHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")


def read_flat(data: bytes) -> list[tuple[str, str]] | None:
    """The children of a flat ``<xml>`` document in order, or None: not for this fast path."""
    if not data.startswith(b"<xml>") or len(data.translate(None, _CONTROL)) != len(data):
        return None
    if not data.isascii() and (_NONCHARACTERS[0] in data or _NONCHARACTERS[1] in data):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _DOCUMENT.fullmatch(text) is None:
        return None
    # An empty CDATA section and empty text both read as "" (one group matched, the other not).
    return [(name, cdata or plain) for name, cdata, plain in _CHILDREN.findall(text, 5)]
