"""Properties of the callback path, checked with Hypothesis (bounded: part of every `make test`).

- any key, token, receive-id and message survive encrypt → sign → verify → decrypt;
- any text a member types and any user id survive WeCom's encoding (CDATA or escaped), the
  ingress's decrypt and parse, the bus (encode → decode) and the reply rule;
- any change to a signed part is caught;
- arbitrary and hostile input raises nothing but ``CryptoError`` subclasses, and whatever parses
  survives the rest of the path: the four targets of ``make fuzz`` (tests/fuzz.py), bounded.
"""

from __future__ import annotations

import contextlib
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.responder.rules import echo_reply
from shared.errors import CryptoError, SignatureError, XMLParseError
from shared.protocol.crypto import CallbackCrypto
from shared.protocol.parser import parse_envelope, parse_message, read_message
from shared.schemas.envelope import EventEnvelope, decode_envelope, encode_envelope
from shared.schemas.inbound import TextMessage, dedup_key
from tests.fuzz import TARGETS, Finding, known_finding, xml_text

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
keys = st.text(string.ascii_letters + string.digits, min_size=43, max_size=43)
tokens = st.text(string.ascii_letters + string.digits, min_size=1, max_size=32)
printable = st.text(string.ascii_letters + string.digits + "-_.@", min_size=1, max_size=32)


def cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@BOUNDED
@given(key=keys, token=tokens, receive_id=printable, msg=st.binary(max_size=2048))
def test_any_message_survives_the_envelope(
    key: str, token: str, receive_id: str, msg: bytes
) -> None:
    crypto = CallbackCrypto(token, key, receive_id)
    params, body = crypto.build_callback(msg, timestamp="1700000000", nonce="n", agent_id=7)
    plain = crypto.decrypt_callback(params["msg_signature"], params["timestamp"], "n", body)
    assert plain == msg
    echo = crypto.build_url_verification(msg, timestamp="1", nonce="2")
    assert crypto.verify_url(echo["msg_signature"], "1", "2", echo["echostr"]) == msg


@BOUNDED
@given(
    content=xml_text.filter(lambda t: t != ""),
    user=xml_text.filter(lambda t: 0 < len(t) <= 64),
    msg_id=st.integers(0, 2**63 - 1),
    use_cdata=st.booleans(),
)
def test_member_text_and_user_ids_survive_ingress_bus_and_reply(
    content: str, user: str, msg_id: int, use_cdata: bool
) -> None:
    crypto = CallbackCrypto("Token", "a" * 43, "wwcorp")
    wrap = cdata if use_cdata else escaped
    plain = (
        f"<xml><ToUserName>{wrap('wwcorp')}</ToUserName><FromUserName>{wrap(user)}</FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType>{wrap('text')}</MsgType>"
        f"<Content>{wrap(content)}</Content><MsgId>{msg_id}</MsgId><AgentID>7</AgentID></xml>"
    ).encode()
    params, body = crypto.build_callback(plain, timestamp="1700000000", nonce="n", agent_id=7)
    plaintext = crypto.decrypt_callback(params["msg_signature"], "1700000000", "n", body)
    event, raw = read_message(plaintext)
    assert isinstance(event, TextMessage)
    assert (event.content, event.from_user, event.msg_id) == (content, user, msg_id)
    key = dedup_key(event, raw)
    stored = decode_envelope(
        encode_envelope(
            EventEnvelope(
                app="default", received_at=1.0, trace_id="t", dedup_key=key, event=event, raw=raw
            )
        )
    )
    assert stored.event == event
    assert (stored.raw["Content"], stored.raw["FromUserName"]) == (content, user)
    reply = echo_reply(content)
    expected = content.replace("吗", "").replace("?", "!").replace("？", "！")
    assert reply == (expected if expected.strip() else None)


def test_line_ends_are_normalised_as_xml_says() -> None:
    """XML turns CR and CRLF into LF, so a member's CR arrives as LF (the one exception above)."""
    plain = b"<xml><ToUserName>c</ToUserName><FromUserName>u</FromUserName><CreateTime>1"
    plain += (
        b"</CreateTime><MsgType>text</MsgType><Content>a\r\nb\rc</Content><MsgId>1</MsgId></xml>"
    )
    event = parse_message(plain)
    assert isinstance(event, TextMessage)
    assert event.content == "a\nb\nc"


@BOUNDED
@given(
    parts=st.tuples(st.text(max_size=20), st.text(max_size=20), st.text(max_size=80)),
    which=st.integers(0, 2),
    change=st.text(min_size=1, max_size=3),
)
def test_any_change_to_a_signed_part_is_caught(
    parts: tuple[str, str, str], which: int, change: str
) -> None:
    crypto = CallbackCrypto("Token", "a" * 43, "wwcorp")
    try:
        signature = crypto.signature(*parts)
    except UnicodeEncodeError:
        return  # lone surrogates cannot be signed; verify refuses them (next test)
    changed = list(parts)
    changed[which] += change
    with pytest.raises(SignatureError):
        crypto.verify(signature, *changed)


@BOUNDED
@given(signature=st.text(max_size=50), timestamp=st.text(max_size=12), body=st.binary(max_size=600))
def test_arbitrary_requests_raise_only_crypto_errors(
    signature: str, timestamp: str, body: bytes
) -> None:
    crypto = CallbackCrypto("Token", "a" * 43, "wwcorp")
    with pytest.raises(CryptoError):
        crypto.decrypt_callback(signature, timestamp, "n", body)
    for parse in (parse_envelope, parse_message):
        with contextlib.suppress(XMLParseError):  # anything else fails the test
            parse(body)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_targets_bounded(name: str) -> None:
    """``make fuzz``'s targets, 150 inputs each; known findings (see test_fuzz_regressions) pass."""
    target = TARGETS[name]

    @BOUNDED
    @given(target.strategy)
    def check(value: Any) -> None:
        try:
            target.check(value)
        except Finding as exc:
            if not known_finding(exc):
                raise

    check()
