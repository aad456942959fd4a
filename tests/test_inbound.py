"""The inbound model: one XML sample per message/event type, JSON round trips, dedup keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from shared.protocol.parser import parse_message, read_message
from shared.schemas import inbound as m
from shared.schemas.envelope import EventEnvelope, decode_envelope, encode_envelope
from shared.schemas.inbound import decode_event, dedup_key, encode_event

SAMPLES = Path(__file__).parent / "samples" / "inbound"
SAMPLE_FILES = sorted(SAMPLES.glob("*.xml"))


def sample(stem: str) -> m.InboundEvent:
    return parse_message((SAMPLES / f"{stem}.xml").read_bytes())


USER_FIELDS: dict[str, Any] = {
    "from_user": "sys",
    "agent_id": None,
    "event": "change_contact",
    "user_id": "zhangsan",
    "name": "张三",
    "department": "1,2,3",
    "main_department": 1,
    "is_leader_in_dept": "1,0,0",
    "direct_leader": "lisi,wangwu",
    "position": "产品经理",
    "mobile": "13800000000",
    "gender": 1,
    "email": "zhangsan@gzdev.com",
    "biz_mail": "zhangsan@qyycs2.wecom.work",
    "status": 1,
    "alias": "zhangsan",
    "telephone": "020-123456",
    "address": "广州市",
    "ext_attr": [
        m.ExtAttrItem(name="爱好", type=0, text=m.ExtAttrText(value="旅游")),
        m.ExtAttrItem(
            name="卡号",
            type=1,
            web=m.ExtAttrWeb(title="企业微信", url="https://work.weixin.qq.com"),
        ),
    ],
}
PIC1 = m.PicItem(pic_md5_sum="1b5f7c23b5bf75682a53e7b6d163e185")
PIC2 = m.PicItem(pic_md5_sum="2c6f8d34c6cf86793b64f8c7e274f296")

# stem -> (class, attribute values read from the sample file)
EXPECTED: dict[str, tuple[type[m.InboundEvent], dict[str, Any]]] = {
    "text": (m.TextMessage, {"content": "  你好吗? <b>&amp; ", "msg_id": 1234567890123456}),
    "image": (
        m.ImageMessage,
        {"pic_url": "https://wework.qpic.cn/wwpic/this_is_a_url/0", "media_id": "media_id_image_1"},
    ),
    "voice": (m.VoiceMessage, {"media_id": "media_id_voice_1", "format": "amr"}),
    "video": (
        m.VideoMessage,
        {"media_id": "media_id_video_1", "thumb_media_id": "thumb_media_id_1"},
    ),
    "location": (
        m.LocationMessage,
        {"location_x": 23.134521, "location_y": 113.358803, "scale": 20, "label": "位置信息"},
    ),
    "link": (
        m.LinkMessage,
        {
            "title": "this is a title!",
            "description": "this is a description!",
            "url": "https://work.weixin.qq.com/",
            "pic_url": "https://work.weixin.qq.com/pic.png",
            "msg_id": 1234567890123461,
        },
    ),
    "event.subscribe": (m.SubscribeEvent, {"event": "subscribe", "event_key": None}),
    "event.unsubscribe": (m.UnsubscribeEvent, {"event": "unsubscribe"}),
    "event.enter_agent": (m.EnterAgentEvent, {"event": "enter_agent", "event_key": None}),
    "event.LOCATION": (
        m.LocationEvent,
        {"latitude": 23.104105, "longitude": 113.320107, "precision": 65.0, "app_type": "wxwork"},
    ),
    "event.batch_job_result": (
        m.BatchJobResultEvent,
        {
            "from_user": "sys",
            "batch_job": m.BatchJob(
                job_id="S0MrnndvRG5fadSlLwiBqiDDbM143UqTmKP3152FZk4",
                job_type="sync_user",
                err_code=0,
                err_msg="ok",
            ),
        },
    ),
    "event.click": (m.ClickEvent, {"event_key": "#sendmsg#_0_0#7599827683974519"}),
    "event.view": (m.ViewEvent, {"event_key": "https://work.weixin.qq.com/wework_admin/frame"}),
    "event.scancode_push": (
        m.ScanCodePushEvent,
        {
            "event_key": "6",
            "scan_code_info": m.ScanCodeInfo(
                scan_type="qrcode", scan_result="https://example.com/qr?id=1"
            ),
        },
    ),
    "event.scancode_waitmsg": (
        m.ScanCodeWaitMsgEvent,
        {"scan_code_info": m.ScanCodeInfo(scan_type="barcode", scan_result="EAN_13,6901234567892")},
    ),
    "event.pic_sysphoto": (
        m.PicSysPhotoEvent,
        {"send_pics_info": m.SendPicsInfo(count=1, pic_list=[PIC1])},  # one <item>: a dict
    ),
    "event.pic_photo_or_album": (
        m.PicPhotoOrAlbumEvent,
        {"send_pics_info": m.SendPicsInfo(count=2, pic_list=[PIC1, PIC2])},  # two: a list
    ),
    "event.pic_weixin": (m.PicWeixinEvent, {"send_pics_info": m.SendPicsInfo(count=0)}),
    "event.location_select": (
        m.LocationSelectEvent,
        {
            "event_key": "6",
            "app_type": "wxwork",
            "send_location_info": m.SendLocationInfo(
                location_x=23.0, location_y=113.0, scale=15, label=" 广州市海珠区客村艺苑路 106号"
            ),
        },
    ),
    "event.open_approval_change": (
        m.OpenApprovalChangeEvent,
        {
            "approval_info": m.ApprovalInfo(
                third_no="201806010001",
                open_sp_name="付款",
                open_template_id="1234567890",
                open_sp_status=1,
                apply_time=1527837645,
                apply_user_name="xiaoming",
                apply_user_id="1",
                apply_user_party="产品部",
                apply_user_image="http://www.qq.com/xxx.png",
                approval_nodes=[
                    m.ApprovalNode(
                        node_status=1,
                        node_attr=1,
                        node_type=1,
                        items=[
                            m.ApprovalItem(
                                item_name="xiaohong",
                                item_user_id="2",
                                item_image="http://www.qq.com/xxx.png",
                                item_status=1,
                            )
                        ],
                    )
                ],
                notify_nodes=[
                    m.NotifyNode(
                        item_name="xiaogang",
                        item_user_id="3",
                        item_image="http://www.qq.com/xxx.png",
                    ),
                    m.NotifyNode(
                        item_name="xiaoli", item_user_id="4", item_image="http://www.qq.com/yyy.png"
                    ),
                ],
            )
        },
    ),
    "event.share_agent_change": (m.ShareAgentChangeEvent, {"agent_id": 1000002}),
    "event.share_chain_change": (m.ShareChainChangeEvent, {"agent_id": 1000002}),
    "event.close_inactive_agent": (m.CloseInactiveAgentEvent, {"agent_id": 1000002}),
    "event.reopen_inactive_agent": (m.ReopenInactiveAgentEvent, {"agent_id": 1000002}),
    "event.template_card_event": (
        m.TemplateCardEvent,
        {
            "event_key": "button_key_approve",
            "task_id": "task_20240101_0001",
            "card_type": "vote_interaction",
            "response_code": "ResponseCode_abcdef",
            "selected_items": [
                m.SelectedItem(question_key="q_1", option_ids=["o_1", "o_2"]),
                m.SelectedItem(question_key="q_2", option_ids=["o_9"]),
            ],
        },
    ),
    "event.template_card_menu_event": (
        m.TemplateCardMenuEvent,
        {
            "event_key": "menu_key_1",
            "task_id": "task_20240101_0002",
            "card_type": "text_notice",
            "response_code": "ResponseCode_menu",
        },
    ),
    "event.change_contact.create_user": (
        m.CreateUserEvent,
        {**USER_FIELDS, "change_type": "create_user"},
    ),
    "event.change_contact.update_user": (
        m.UpdateUserEvent,
        {**USER_FIELDS, "change_type": "update_user", "new_user_id": "zhangsan001"},
    ),
    "event.change_contact.delete_user": (
        m.DeleteUserEvent,
        {"change_type": "delete_user", "user_id": "zhangsan", "from_user": "sys"},
    ),
    "event.change_contact.create_party": (
        m.CreatePartyEvent,
        {"id": 2, "name": "张三", "parent_id": 1, "order": 1},
    ),
    "event.change_contact.update_party": (
        m.UpdatePartyEvent,
        {"id": 2, "name": "研发部", "parent_id": 1},
    ),
    "event.change_contact.delete_party": (m.DeletePartyEvent, {"id": 2}),
    "event.change_contact.update_tag": (
        m.UpdateTagEvent,
        {
            "tag_id": 1,
            "add_user_items": "zhangsan,lisi",
            "del_user_items": "zhangsan1,lisi1",
            "add_party_items": "1,2",
            "del_party_items": "3,4",
        },
    ),
    "unknown_event": (m.UnknownEvent, {"event": "kf_msg_or_event", "agent_id": 1000002}),
    "unknown_message": (m.UnknownMessage, {"msg_type": "file", "msg_id": 1234567890123462}),
}


def test_every_concrete_type_has_a_sample_and_an_expectation() -> None:
    tags = {str(cls.__struct_config__.tag) for cls in m.CONCRETE_TYPES}
    assert {p.stem for p in SAMPLE_FILES} == tags == set(EXPECTED)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_sample_parses_to_its_class_with_its_values(stem: str) -> None:
    cls, values = EXPECTED[stem]
    ev = sample(stem)
    assert type(ev) is cls
    assert ev.to_user == "ww1234567890abcdef"
    assert isinstance(ev.create_time, int) and ev.create_time > 1_300_000_000
    assert {name: getattr(ev, name) for name in values} == values
    if isinstance(ev, m.Message):
        assert ev.agent_id == 1000002 and ev.from_user == "zhangsan"


def test_unknown_types_keep_every_field() -> None:
    ev = sample("unknown_event")
    assert isinstance(ev, m.UnknownEvent) and isinstance(ev, m.Event)
    assert ev.from_user == "zhangsan"
    assert ev.fields["Token"] == "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"
    assert ev.fields["OpenKfId"] == "wkxxxxxxx"
    assert ev.fields["Extra"] == {"Nested": ["kept", "twice"]}
    msg = sample("unknown_message")
    assert isinstance(msg, m.UnknownMessage)
    assert msg.fields["FileName"] == "report.pdf" and msg.fields["MediaId"] == "media_id_file_1"


def test_unknown_change_type_is_an_unknown_event() -> None:
    body = (SAMPLES / "event.change_contact.delete_party.xml").read_bytes()
    ev = parse_message(body.replace(b"delete_party", b"merge_party"))
    assert isinstance(ev, m.UnknownEvent)
    assert ev.event == "change_contact" and ev.fields["ChangeType"] == "merge_party"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_json_round_trip(path: Path) -> None:
    ev = parse_message(path.read_bytes())
    data = encode_event(ev)
    again = decode_event(data)
    assert type(again) is type(ev) and again == ev
    assert msgspec.json.decode(data)["type"] == path.stem


def test_json_uses_wecom_names() -> None:
    doc = msgspec.json.decode(encode_event(sample("text")))
    assert doc["type"] == "text"
    assert doc["FromUserName"] == "zhangsan" and doc["MsgId"] == 1234567890123456
    assert doc["Content"] == "  你好吗? <b>&amp; " and doc["AgentID"] == 1000002


def test_decoding_is_forward_and_backward_compatible() -> None:
    doc = msgspec.json.decode(encode_event(sample("event.click")))
    newer = msgspec.json.encode({**doc, "FieldFromTheFuture": {"x": 1}})
    assert decode_event(newer) == sample("event.click")
    older = msgspec.json.encode({k: v for k, v in doc.items() if k not in ("AgentID", "EventKey")})
    ev = decode_event(older)
    assert isinstance(ev, m.ClickEvent) and ev.agent_id is None and ev.event_key is None


def test_unknown_tag_from_a_newer_producer_decodes_as_unknown_event() -> None:
    data = msgspec.json.encode(
        {
            "type": "event.brand_new",
            "ToUserName": "ww1",
            "FromUserName": "bob",
            "CreateTime": 1700000000,
            "Event": "brand_new",
            "Extra": [1, 2],
        }
    )
    ev = decode_event(data)
    assert isinstance(ev, m.UnknownEvent)
    assert (ev.from_user, ev.create_time, ev.event) == ("bob", 1700000000, "brand_new")
    assert ev.fields["Extra"] == [1, 2] and ev.fields["type"] == "event.brand_new"


def test_corrupt_json_is_an_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"{not json")
    for doc in (b'{"type":["text"],"ToUserName":"a"}', b"[1, 2]", b'{"ToUserName":"a"}'):
        with pytest.raises(msgspec.ValidationError):
            decode_event(doc)
    with pytest.raises(msgspec.ValidationError):  # a known tag with a wrong field type
        decode_event(
            b'{"type":"text","ToUserName":"a","FromUserName":"b","CreateTime":"x","MsgId":1}'
        )


def test_routing_properties() -> None:
    text = sample("text")
    assert isinstance(text, m.TextMessage) and text.content.strip() == "你好吗? <b>&amp;"
    click = sample("event.click")
    assert isinstance(click, m.Event) and (click.event, click.from_user) == ("click", "zhangsan")
    assert not isinstance(click, m.Message) and not isinstance(text, m.Event)
    assert isinstance(sample("event.change_contact.update_user"), m.ChangeContactEvent)
    assert not isinstance(sample("event.change_contact.update_user"), m.CreateUserEvent)


# ---------------------------------------------------------------- dedup keys


def key_of(body: bytes) -> str:
    event, raw = read_message(body)
    return dedup_key(event, raw)


def test_dedup_key_is_stable_for_the_same_delivery() -> None:
    for path in SAMPLE_FILES:
        first, second = read_message(path.read_bytes()), read_message(path.read_bytes())
        key = dedup_key(*first)
        event = cast("m.InboundEventType", first.event)
        envelope = EventEnvelope(
            app="default", received_at=1.0, trace_id="t", dedup_key=key, event=event, raw=first.raw
        )
        back = decode_envelope(encode_envelope(envelope))
        assert key == dedup_key(*second) == dedup_key(back.event, back.raw)
        assert len(key) < 200 and key.isprintable()


def test_a_retry_written_differently_is_the_same_message() -> None:
    """Whitespace between elements and CDATA vs escaped text do not change the message."""
    body = (SAMPLES / "event.change_contact.update_tag.xml").read_bytes()
    plain = re.sub(rb"<!\[CDATA\[(.*?)\]\]>", rb"\1", body)
    assert plain != body
    assert key_of(plain.replace(b"><", b">\n  <")) == key_of(body)


def test_dedup_keys_of_all_samples_are_distinct() -> None:
    keys = [key_of(p.read_bytes()) for p in SAMPLE_FILES]
    assert len(set(keys)) == len(keys)


def test_message_key_is_the_msg_id() -> None:
    assert key_of((SAMPLES / "text.xml").read_bytes()) == "msg:1234567890123456"
    assert key_of((SAMPLES / "unknown_message.xml").read_bytes()) == "msg:1234567890123462"


def test_without_raw_the_typed_view_is_digested() -> None:
    click = sample("event.click")
    assert dedup_key(click) == dedup_key(decode_event(encode_event(click)))
    assert dedup_key(click).startswith("evt:") and len(dedup_key(click)) < 200


def variant(stem: str, old: bytes, new: bytes) -> bytes:
    body = (SAMPLES / f"{stem}.xml").read_bytes()
    assert old in body
    return body.replace(old, new)


@pytest.mark.parametrize(
    ("stem", "old", "new"),
    [
        ("event.click", b"#sendmsg#_0_0#7599827683974519", b"other_key"),
        ("event.change_contact.create_user", b"[zhangsan]]></UserID>", b"[lisi]]></UserID>"),
        ("event.change_contact.delete_party", b"<Id>2</Id>", b"<Id>3</Id>"),
        ("event.change_contact.update_tag", b"<TagId>1</TagId>", b"<TagId>2</TagId>"),
        ("event.change_contact.update_tag", b"zhangsan,lisi", b"wangwu"),  # AddUserItems
        ("event.change_contact.update_tag", b"3,4", b"5"),  # DelPartyItems
        ("event.batch_job_result", b"S0MrnndvRG5", b"XXMrnndvRG5"),
        ("event.template_card_event", b"ResponseCode_abcdef", b"ResponseCode_other"),
        ("event.open_approval_change", b"<OpenSpStatus>1<", b"<OpenSpStatus>2<"),
        ("event.enter_agent", b"</xml>", b"<NotModelled>1</NotModelled></xml>"),
        ("unknown_event", b"wkxxxxxxx", b"wkyyyyyyy"),
        ("unknown_event", b"[twice]]></Nested>", b"[kept]]></Nested>"),  # a repeat's copy
    ],
)
def test_same_second_events_that_differ_anywhere_get_different_keys(
    stem: str, old: bytes, new: bytes
) -> None:
    original = read_message(variant(stem, b"", b""))
    changed = read_message(variant(stem, old, new))
    assert original.event.create_time == changed.event.create_time
    assert original.event.from_user == changed.event.from_user
    assert dedup_key(*original) != dedup_key(*changed)


def test_same_second_change_types_differ() -> None:
    create = (SAMPLES / "event.change_contact.create_user.xml").read_bytes()
    delete = (SAMPLES / "event.change_contact.delete_user.xml").read_bytes()
    assert sample("event.change_contact.create_user").create_time == (
        sample("event.change_contact.delete_user").create_time
    )
    assert key_of(create) != key_of(delete)


def test_keys_stay_short_and_printable_whatever_the_values() -> None:
    for value in (b"k" * 5000, b"x:task_id=T", b"line\nbreak", "\u2028你".encode()):
        key = key_of(variant("event.click", b"#sendmsg#_0_0#7599827683974519", value))
        assert len(key) < 200 and key.isprintable() and value not in key.encode()


# ---------------------------------------------------------------- the envelope's raw


def test_raw_survives_every_decoding_path_and_defaults_to_empty() -> None:
    parsed, raw = read_message((SAMPLES / "event.click.xml").read_bytes())
    event, key = cast("m.InboundEventType", parsed), dedup_key(parsed, raw)
    envelope = EventEnvelope(
        app="hr", received_at=1.0, trace_id="t", dedup_key=key, event=event, raw=raw
    )
    doc = msgspec.json.decode(encode_envelope(envelope))
    assert doc["raw"] == raw and doc["raw"]["EventKey"] == "#sendmsg#_0_0#7599827683974519"
    newer = {**doc, "event": {**doc["event"], "type": "event.from_the_future"}}
    back = decode_envelope(msgspec.json.encode(newer))
    assert isinstance(back.event, m.UnknownEvent) and back.raw == raw
    older = {k: v for k, v in doc.items() if k != "raw"}
    assert decode_envelope(msgspec.json.encode(older)).raw == {}
