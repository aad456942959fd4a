"""The flat-XML fast path (shared.protocol.flat) against the expat readers it stands in for.

Whatever ``read_flat`` accepts, expat must accept and read to the same fields; whatever it
declines goes to expat unchanged. Checked on WeCom's samples and on generated documents full of
what a fast path gets wrong: CDATA ends, references, CR, forbidden characters, bad UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import XMLParseError
from shared.protocol import parser
from shared.protocol.flat import read_flat

SAMPLES = sorted((Path(__file__).parent / "samples" / "inbound").glob("*.xml"))


def expat_root(data: bytes) -> dict[str, Any] | None:
    """What the expat tree builder makes of ``data`` as a message root; None: refused."""
    builder = parser._TreeBuilder(16)
    try:
        parser._parse(data, 1 << 20, "message", builder.start, builder.end, builder.chars)
    except XMLParseError:
        return None
    ((name, root),) = (builder.children[0] or {}).items()
    assert name == "xml"
    return root if type(root) is dict else {}


def expat_envelope(data: bytes) -> dict[str, str] | None:
    reader = parser._EnvelopeReader()
    try:
        parser._parse(data, 1 << 20, "body", reader.start, reader.end, reader.chars)
    except XMLParseError:
        return None
    return reader.fields


def agrees(data: bytes) -> bool:
    """True when the fast path took ``data``; fails when it read it differently from expat."""
    pairs = read_flat(data)
    if pairs is None:
        return False
    assert parser._flat_root(pairs) == expat_root(data)
    fields = parser._flat_envelope(data)
    assert fields is None or fields == expat_envelope(data)
    return True


def test_flat_wecom_samples_take_the_fast_path_and_agree() -> None:
    taken = [path.name for path in SAMPLES if agrees(path.read_bytes())]
    # The common messages and events are flat; nested ones (PicList, approvals) are not.
    assert "text.xml" in taken
    assert "event.click.xml" in taken
    assert len(taken) >= len(SAMPLES) // 2


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><A>x</A><A/></xml>",  # an empty-element tag
        b'<xml><A b="c">x</A></xml>',  # an attribute
        b"<xml><A>a&amp;b</A></xml>",  # a reference
        b"<xml><A>a\r\nb</A></xml>",  # CR: expat makes it LF
        b"<xml><A><![CDATA[a\rb]]></A></xml>",
        b"<xml><A><![CDATA[a]]]]><![CDATA[>b]]></A></xml>",  # "]]>" split over two sections
        b"<xml><A><![CDATA[a]]>b</A></xml>",  # mixed content
        b"<xml><A><B>x</B></A></xml>",  # nesting
        b"<xml><A>\x01</A></xml>",  # a character XML forbids
        b"<xml><A>\xff</A></xml>",  # not UTF-8
        b"<xml><A>\xef\xbf\xbe</A></xml>",  # U+FFFE
        b"<xml></xml>",
        b"<xml><A>x</A></xml><!-- c -->",
        b'<?xml version="1.0"?><xml><A>x</A></xml>',
        b"<xml><A>x</a></xml>",  # mismatched tags
        b"<xml><A>x</A>text</xml>",  # text directly in <xml>
        b"<xml><A>x</A>",  # not closed
        b"<xml><A>]]></A></xml>",
    ],
)
def test_anything_else_is_left_to_expat(body: bytes) -> None:
    assert read_flat(body) is None


def test_refusals_are_still_expats_own() -> None:
    with pytest.raises(XMLParseError, match=r"not well-formed|malformed"):
        parser.read_message(b"<xml><A>\x01</A></xml>")
    with pytest.raises(XMLParseError, match="duplicate <Encrypt>"):
        parser.parse_envelope(b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>")


def test_repeats_and_empty_elements_match_the_tree_builder() -> None:
    body = b"<xml>\n <A>1</A><B></B> <A><![CDATA[]]></A>\t<A> x </A>\n</xml>\n"
    assert agrees(body)
    assert parser.read_message(body).raw == {"A": ["1", None, " x "], "B": None}


_NASTY = st.sampled_from(
    ["", " ", "a", "]", "]]", "]]>", "&", "&amp;", "<", ">", "\r", "\n", "\t", "\x01", "\x00",
     "é", "好", "\ufffe", "<![CDATA[", "</A>", "<A>", "\ud7ff", "\U0001f600"]
)  # fmt: skip
_TEXT = st.lists(st.one_of(_NASTY, st.text(max_size=4)), max_size=3).map("".join)
_NAME = st.sampled_from(["A", "B", "Content", "MsgType", "Encrypt", "AgentID", "a_1", "1A", "A:B"])


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name, text = draw(_NAME), draw(_TEXT)
        end = draw(st.sampled_from([name, name, "A"]))
        body = f"<![CDATA[{text}]]>" if draw(st.booleans()) else text
        gap = draw(st.sampled_from(["", "", " ", "\n", "\r\n", "x"]))
        parts.append(f"{gap}<{name}>{body}</{end}>")
    raw = ("<xml>" + "".join(parts) + draw(st.sampled_from(["", "\n"])) + "</xml>").encode(
        "utf-8", "surrogatepass"
    )
    if draw(st.integers(0, 3)) == 0:  # a byte flipped
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw


@settings(max_examples=600, deadline=None)
@given(documents())
def test_generated_documents_agree_with_expat(data: bytes) -> None:
    agrees(data)
