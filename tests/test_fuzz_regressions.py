"""Findings of ``make fuzz`` (tests/fuzz.py), each kept as a regression case once found.

A finding reported but not fixed yet would be ``xfail(strict=True)`` here, with its message
fragment in ``tests.fuzz.KNOWN_FINDINGS``; both come off together when the fix lands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.errors import XMLParseError
from shared.protocol.parser import parse_envelope, parse_message
from tests.fuzz import check_body, check_plaintext, known_finding

SAMPLES = Path(__file__).parent / "samples" / "inbound"
ENVELOPE = (
    "<xml><ToUserName><![CDATA[wwtestcorp0001]]></ToUserName>"
    "<Encrypt><![CDATA[QUJDREVGR0g=]]></Encrypt><AgentID>1000002</AgentID></xml>"
)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_an_envelope_in_utf16_without_bom_is_refused(encoding: str) -> None:
    """Found by the envelope target from the corpus case body_utf16_no_bom, mutated."""
    with pytest.raises(XMLParseError):
        parse_envelope(ENVELOPE.encode(encoding))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_message_in_utf16_without_bom_is_refused(encoding: str) -> None:
    message = (SAMPLES / "text.xml").read_text()
    with pytest.raises(XMLParseError):
        parse_message(message.encode(encoding))


def test_the_fuzz_invariant_holds_for_the_utf16_finding() -> None:
    check_body(ENVELOPE.encode("utf-16-le"))


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize(
    ("sample", "element"),
    [
        ("location.xml", "Location_X"),
        ("event.LOCATION.xml", "Latitude"),
        ("event.LOCATION.xml", "Precision"),
    ],
)
def test_non_finite_coordinates_are_refused_or_survive_the_bus(
    sample: str, element: str, value: str
) -> None:
    """Found by the message target: <Latitude>nan</Latitude> in a LOCATION event."""
    xml = (SAMPLES / sample).read_bytes()
    tag = element.encode()
    hostile = re.sub(rb"<%s>[^<]*</" % tag, b"<%s>%s</" % (tag, value.encode()), xml)
    assert hostile != xml
    check_plaintext(hostile)


def test_fixed_findings_are_no_longer_excused() -> None:
    """``make fuzz`` fails again if either finding comes back (nothing is on the known list)."""
    for message in (
        "a body that is not UTF-8 was accepted",
        "stored event cannot be read back: Expected `float`, got `null`",
    ):
        assert known_finding(AssertionError(message)) is None
