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


def _xml(*parts: str) -> bytes:
    return ("<xml>" + "".join(parts) + "</xml>").encode()


def _head(msg_type: str, create_time: int, from_user: str | None = "alice") -> list[str]:
    head = [f"<ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"]
    if from_user is not None:
        head.append(f"<FromUserName><![CDATA[{from_user}]]></FromUserName>")
    return [*head, f"<CreateTime>{create_time}</CreateTime>", f"<MsgType>{msg_type}</MsgType>"]


def kf_event(create_time: int) -> bytes:
    """微信客服: no FromUserName, no AgentID; the app pulls messages with this Token."""
    return _xml(
        *_head("event", create_time, from_user=None),
        "<Event><![CDATA[kf_msg_or_event]]></Event>",
        "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>",
        "<OpenKfId><![CDATA[wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw]]></OpenKfId>",
    )


def unmodelled_event(create_time: int) -> bytes:
    """An Event nobody models, with nested and repeated elements."""
    return _xml(
        *_head("event", create_time),
        "<Event><![CDATA[brand_new_event]]></Event>",
        "<Detail><Item><Key>a</Key><Value>1</Value></Item><Item><Key>b</Key></Item></Detail>",
        "<Flag/>",
        f"<AgentID>{AGENT_ID}</AgentID>",
    )


def update_tag(create_time: int, add_users: str) -> bytes:
    """change_contact/update_tag as WeCom sends it: from "sys", no AgentID."""
    return _xml(
        *_head("event", create_time, from_user="sys"),
        "<Event><![CDATA[change_contact]]></Event>",
        "<ChangeType><![CDATA[update_tag]]></ChangeType>",
        "<TagId>7</TagId>",
        f"<AddUserItems><![CDATA[{add_users}]]></AddUserItems>",
    )


def text_with_extras(create_time: int, msg_id: int) -> bytes:
    """A text message carrying an element added later and a nested, repeated one."""
    return _xml(
        *_head("text", create_time),
        "<Content><![CDATA[hello  with extras]]></Content>",
        f"<MsgId>{msg_id}</MsgId>",
        f"<AgentID>{AGENT_ID}</AgentID>",
        "<QuoteMsgId>99</QuoteMsgId>",
        "<Mentions><User>bob</User><User>carol</User></Mentions>",
    )


def image_with_extras(create_time: int, msg_id: int) -> bytes:
    """An image message whose extra element repeats at the top level."""
    return _xml(
        *_head("image", create_time),
        "<PicUrl><![CDATA[http://example.com/p.jpg]]></PicUrl>",
        "<MediaId><![CDATA[media_1]]></MediaId>",
        f"<MsgId>{msg_id}</MsgId>",
        f"<AgentID>{AGENT_ID}</AgentID>",
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
