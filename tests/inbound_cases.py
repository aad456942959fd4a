"""Authentic callbacks no model fully describes, as WeCom could send them (plaintext XML).

Shared by the in-process ingress tests and the end-to-end tests with real processes: each must
be answered 200 and stored with every element, and a retry of it must add nothing.
``expected_raw`` is the oracle for "every element": xmltodict's reading of the same XML, an
implementation independent of the ingress's own parser.
"""

from __future__ import annotations

from typing import Any

import xmltodict

from tests.helpers import AGENT_ID, CORP_ID

__all__ = ["expected_raw", "odd_callbacks"]


def _xml(msg_type: str, create_time: int, *parts: str, from_user: str | None = "alice") -> bytes:
    head = [f"<ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"]
    if from_user is not None:
        head.append(f"<FromUserName><![CDATA[{from_user}]]></FromUserName>")
    head += [f"<CreateTime>{create_time}</CreateTime>", f"<MsgType>{msg_type}</MsgType>"]
    return ("<xml>" + "".join([*head, *parts]) + "</xml>").encode()


def kf_event(create_time: int) -> bytes:
    """微信客服: no FromUserName, no AgentID; the app pulls messages with this Token."""
    return _xml(
        "event",
        create_time,
        "<Event><![CDATA[kf_msg_or_event]]></Event>",
        "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>",
        "<OpenKfId><![CDATA[wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw]]></OpenKfId>",
        from_user=None,
    )


def unmodelled_event(create_time: int) -> bytes:
    """An Event nobody models, with nested and repeated elements and an empty one."""
    detail = "<Item><Key>a</Key><Value>1</Value></Item><Item><Key>b</Key></Item>"
    return _xml(
        "event",
        create_time,
        f"<Event>brand_new_event</Event><Detail>{detail}</Detail><Flag/>",
        f"<AgentID>{AGENT_ID}</AgentID>",
    )


def update_tag(create_time: int, add_users: str) -> bytes:
    """change_contact/update_tag as WeCom sends it: from "sys", no AgentID."""
    change = "<Event>change_contact</Event><ChangeType>update_tag</ChangeType><TagId>7</TagId>"
    items = f"<AddUserItems><![CDATA[{add_users}]]></AddUserItems>"
    return _xml("event", create_time, change, items, from_user="sys")


def text_with_extras(create_time: int, msg_id: int) -> bytes:
    """A text message carrying an element added later and a nested, repeated one."""
    return _xml(
        "text",
        create_time,
        f"<Content><![CDATA[hello  with extras]]></Content><MsgId>{msg_id}</MsgId>",
        f"<AgentID>{AGENT_ID}</AgentID><QuoteMsgId>99</QuoteMsgId>",
        "<Mentions><User>bob</User><User>carol</User></Mentions>",
    )


def image_with_extras(create_time: int, msg_id: int) -> bytes:
    """An image message whose extra element repeats at the top level."""
    return _xml(
        "image",
        create_time,
        "<PicUrl><![CDATA[http://example.com/p.jpg]]></PicUrl><MediaId>media_1</MediaId>",
        f"<MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID>",
        "<Label>first</Label><Label>second</Label><Label>third</Label>",
    )


def odd_callbacks(create_time: int, msg_id: int) -> dict[str, bytes]:
    """Every case by name; the two update_tag differ only in AddUserItems (same second)."""
    return {
        "kf_event": kf_event(create_time),
        "unmodelled_event": unmodelled_event(create_time),
        "update_tag_1": update_tag(create_time, "zhangsan,lisi"),
        "update_tag_2": update_tag(create_time, "wangwu"),
        "text_with_extras": text_with_extras(create_time, msg_id),
        "image_with_extras": image_with_extras(create_time, msg_id + 1),
    }


def expected_raw(plaintext: bytes) -> dict[str, Any]:
    """Every element of ``plaintext`` (lists for repeats, None when empty), per xmltodict."""
    doc: dict[str, Any] = xmltodict.parse(plaintext, strip_whitespace=False)
    root: dict[str, Any] = doc["xml"]
    return root
