"""Typed model of every message and event a WeCom self-built app receives.

Python attributes are snake_case; the encoded names are WeCom's own XML element names
(``ToUserName``, ``MsgId``, ``Location_X`` …), so ``msgspec.convert`` turns the parsed XML
straight into these Structs and the JSON on the bus reads like WeCom's documentation.
The tag field ``type`` holds WeCom's MsgType for messages and ``event.<Event>`` (plus
``.<ChangeType>`` for change_contact) for events. Every type-specific field has a default, so
a field WeCom leaves empty or adds later never breaks parsing, and old consumers keep decoding
what newer producers write (msgspec schema evolution).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any, TypeAlias, get_args

import msgspec

__all__ = [
    "CONCRETE_TYPES", "TAGS", "ApprovalInfo", "ApprovalItem", "ApprovalNode", "BatchJob",
    "BatchJobResultEvent", "ChangeContactEvent", "ClickEvent", "CloseInactiveAgentEvent",
    "CreatePartyEvent", "CreateUserEvent", "DeletePartyEvent", "DeleteUserEvent", "EnterAgentEvent",
    "Event", "ExtAttrItem", "ExtAttrText", "ExtAttrWeb", "ImageMessage", "InboundEvent",
    "InboundEventType", "LinkMessage", "LocationEvent", "LocationMessage", "LocationSelectEvent",
    "Message", "NotifyNode", "OpenApprovalChangeEvent", "PicItem", "PicPhotoOrAlbumEvent",
    "PicSysPhotoEvent", "PicWeixinEvent", "ReopenInactiveAgentEvent", "ScanCodeInfo",
    "ScanCodePushEvent", "ScanCodeWaitMsgEvent", "SelectedItem", "SendLocationInfo", "SendPicsInfo",
    "ShareAgentChangeEvent", "ShareChainChangeEvent", "SubscribeEvent", "TemplateCardEvent",
    "TemplateCardMenuEvent", "TextMessage", "UnknownEvent", "UnknownMessage", "UnsubscribeEvent",
    "UpdatePartyEvent", "UpdateTagEvent", "UpdateUserEvent", "VideoMessage", "ViewEvent",
    "VoiceMessage", "decode_event", "dedup_key", "encode_event",
]  # fmt: skip

# WeCom names that plain PascalCase of the attribute name would get wrong.
# Coordinates: "nan" or "inf" would parse as floats but travel as JSON null and then fail to
# decode in every consumer; bounding the value refuses them here (the event is kept as an
# UnknownEvent/UnknownMessage with its fields as text instead).
Finite = Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]

_NAMES = {
    "to_user": "ToUserName",
    "from_user": "FromUserName",
    "agent_id": "AgentID",
    "location_x": "Location_X",
    "location_y": "Location_Y",
    "user_id": "UserID",
    "new_user_id": "NewUserID",
    "approverstep": "approverstep",
    "fields": "fields",
}


def _wecom_name(attr: str) -> str:
    return _NAMES.get(attr) or "".join(part.capitalize() for part in attr.split("_"))


class _WeCom(msgspec.Struct, frozen=True, kw_only=True, rename=_wecom_name):
    """Shared config: frozen data, keyword-only, encoded under WeCom's element names."""


# ---------------------------------------------------------------- base types


class InboundEvent(_WeCom, tag_field="type", frozen=True, kw_only=True):
    """Anything WeCom pushes to the callback URL: a message or an event."""

    to_user: str
    from_user: str
    create_time: int
    agent_id: int | None = None


class Message(InboundEvent, frozen=True, kw_only=True):
    msg_id: int


class Event(InboundEvent, frozen=True, kw_only=True):
    """MsgType=event; ``event`` is WeCom's Event value, exactly as sent."""

    event: str
    event_key: str | None = None


# ---------------------------------------------------------------- messages (接收消息)


class TextMessage(Message, tag="text", frozen=True, kw_only=True):
    content: str = ""


class ImageMessage(Message, tag="image", frozen=True, kw_only=True):
    pic_url: str = ""
    media_id: str = ""


class VoiceMessage(Message, tag="voice", frozen=True, kw_only=True):
    media_id: str = ""
    format: str = ""


class VideoMessage(Message, tag="video", frozen=True, kw_only=True):
    media_id: str = ""
    thumb_media_id: str = ""


class LocationMessage(Message, tag="location", frozen=True, kw_only=True):
    location_x: Finite = 0.0
    location_y: Finite = 0.0
    scale: int = 0
    label: str = ""
    app_type: str | None = None


class LinkMessage(Message, tag="link", frozen=True, kw_only=True):
    title: str = ""
    description: str = ""
    url: str = ""
    pic_url: str = ""


class UnknownMessage(InboundEvent, tag="unknown_message", frozen=True, kw_only=True):
    """A MsgType this version does not model; ``fields`` keeps every element WeCom sent."""

    msg_type: str = ""
    msg_id: int | None = None
    fields: dict[str, Any] = {}


# ---------------------------------------------------------------- nested structures


class ScanCodeInfo(_WeCom, frozen=True):
    scan_type: str = ""
    scan_result: str = ""


class PicItem(_WeCom, frozen=True):
    pic_md5_sum: str = ""


class SendPicsInfo(_WeCom, frozen=True):
    count: int = 0
    pic_list: list[PicItem] = []


class SendLocationInfo(_WeCom, frozen=True):
    location_x: Finite = 0.0
    location_y: Finite = 0.0
    scale: int = 0
    label: str = ""
    poiname: str = ""


class BatchJob(_WeCom, frozen=True):
    job_id: str = ""
    job_type: str = ""
    err_code: int = 0
    err_msg: str = ""


class ApprovalItem(_WeCom, frozen=True):
    item_name: str = ""
    item_user_id: str = ""
    item_image: str = ""
    item_status: int = 0
    item_speech: str = ""
    item_op_time: int = 0


class ApprovalNode(_WeCom, frozen=True):
    node_status: int = 0
    node_attr: int = 0
    node_type: int = 0
    items: list[ApprovalItem] = []


class NotifyNode(_WeCom, frozen=True):
    item_name: str = ""
    item_user_id: str = ""
    item_image: str = ""


class ApprovalInfo(_WeCom, frozen=True):
    third_no: str = ""
    open_sp_name: str = ""
    open_template_id: str = ""
    open_sp_status: int = 0
    apply_time: int = 0
    apply_user_name: str = ""
    apply_user_id: str = ""
    apply_user_party: str = ""
    apply_user_image: str = ""
    approval_nodes: list[ApprovalNode] = []
    notify_nodes: list[NotifyNode] = []
    approverstep: int = 0


class SelectedItem(_WeCom, frozen=True):
    question_key: str = ""
    option_ids: list[str] = []


class ExtAttrText(_WeCom, frozen=True):
    value: str = ""


class ExtAttrWeb(_WeCom, frozen=True):
    title: str = ""
    url: str = ""


class ExtAttrItem(_WeCom, frozen=True):
    name: str = ""
    type: int = 0
    text: ExtAttrText | None = None
    web: ExtAttrWeb | None = None


# ---------------------------------------------------------------- events (接收事件)


class SubscribeEvent(Event, tag="event.subscribe", frozen=True, kw_only=True):
    pass


class UnsubscribeEvent(Event, tag="event.unsubscribe", frozen=True, kw_only=True):
    pass


class EnterAgentEvent(Event, tag="event.enter_agent", frozen=True, kw_only=True):
    pass


class LocationEvent(Event, tag="event.LOCATION", frozen=True, kw_only=True):
    latitude: Finite = 0.0
    longitude: Finite = 0.0
    precision: Finite = 0.0
    app_type: str | None = None


class BatchJobResultEvent(Event, tag="event.batch_job_result", frozen=True, kw_only=True):
    batch_job: BatchJob | None = None


class ClickEvent(Event, tag="event.click", frozen=True, kw_only=True):
    pass


class ViewEvent(Event, tag="event.view", frozen=True, kw_only=True):
    pass


class ScanCodePushEvent(Event, tag="event.scancode_push", frozen=True, kw_only=True):
    scan_code_info: ScanCodeInfo | None = None


class ScanCodeWaitMsgEvent(Event, tag="event.scancode_waitmsg", frozen=True, kw_only=True):
    scan_code_info: ScanCodeInfo | None = None


class PicSysPhotoEvent(Event, tag="event.pic_sysphoto", frozen=True, kw_only=True):
    send_pics_info: SendPicsInfo | None = None


class PicPhotoOrAlbumEvent(Event, tag="event.pic_photo_or_album", frozen=True, kw_only=True):
    send_pics_info: SendPicsInfo | None = None


class PicWeixinEvent(Event, tag="event.pic_weixin", frozen=True, kw_only=True):
    send_pics_info: SendPicsInfo | None = None


class LocationSelectEvent(Event, tag="event.location_select", frozen=True, kw_only=True):
    send_location_info: SendLocationInfo | None = None
    app_type: str | None = None


class OpenApprovalChangeEvent(Event, tag="event.open_approval_change", frozen=True, kw_only=True):
    approval_info: ApprovalInfo | None = None


class ShareAgentChangeEvent(Event, tag="event.share_agent_change", frozen=True, kw_only=True):
    pass


class ShareChainChangeEvent(Event, tag="event.share_chain_change", frozen=True, kw_only=True):
    pass


class CloseInactiveAgentEvent(Event, tag="event.close_inactive_agent", frozen=True, kw_only=True):
    pass


class ReopenInactiveAgentEvent(Event, tag="event.reopen_inactive_agent", frozen=True, kw_only=True):
    pass


class TemplateCardEvent(Event, tag="event.template_card_event", frozen=True, kw_only=True):
    task_id: str = ""
    card_type: str = ""
    response_code: str = ""
    selected_items: list[SelectedItem] = []


class TemplateCardMenuEvent(Event, tag="event.template_card_menu_event", frozen=True, kw_only=True):
    task_id: str = ""
    card_type: str = ""
    response_code: str = ""


# change_contact: one class per ChangeType; FromUserName is "sys".


class ChangeContactEvent(Event, frozen=True, kw_only=True):
    change_type: str


class _UserChange(ChangeContactEvent, frozen=True, kw_only=True):
    # Since 2022-08-15 WeCom may send only UserID and Department [D-CONTACT]: all optional.
    user_id: str = ""
    name: str | None = None
    department: str | None = None
    main_department: int | None = None
    is_leader_in_dept: str | None = None
    direct_leader: str | None = None
    position: str | None = None
    mobile: str | None = None
    gender: int | None = None
    email: str | None = None
    biz_mail: str | None = None
    status: int | None = None
    avatar: str | None = None
    alias: str | None = None
    telephone: str | None = None
    address: str | None = None
    ext_attr: list[ExtAttrItem] = []


class CreateUserEvent(
    _UserChange, tag="event.change_contact.create_user", frozen=True, kw_only=True
):
    pass


class UpdateUserEvent(
    _UserChange, tag="event.change_contact.update_user", frozen=True, kw_only=True
):
    new_user_id: str | None = None


class DeleteUserEvent(
    ChangeContactEvent, tag="event.change_contact.delete_user", frozen=True, kw_only=True
):
    user_id: str = ""


class CreatePartyEvent(
    ChangeContactEvent, tag="event.change_contact.create_party", frozen=True, kw_only=True
):
    id: int = 0
    name: str = ""
    parent_id: int | None = None
    order: int | None = None


class UpdatePartyEvent(
    ChangeContactEvent, tag="event.change_contact.update_party", frozen=True, kw_only=True
):
    id: int = 0
    name: str | None = None
    parent_id: int | None = None


class DeletePartyEvent(
    ChangeContactEvent, tag="event.change_contact.delete_party", frozen=True, kw_only=True
):
    id: int = 0


class UpdateTagEvent(
    ChangeContactEvent, tag="event.change_contact.update_tag", frozen=True, kw_only=True
):
    tag_id: int = 0
    add_user_items: str = ""
    del_user_items: str = ""
    add_party_items: str = ""
    del_party_items: str = ""


class UnknownEvent(Event, tag="unknown_event", frozen=True, kw_only=True):
    """An Event (or ChangeType) this version does not model; ``fields`` keeps everything sent.

    Also what ``decode_event`` returns for a tag written by a newer producer.
    """

    event: str = ""
    fields: dict[str, Any] = {}


# ---------------------------------------------------------------- the union and JSON

InboundEventType: TypeAlias = (
    TextMessage | ImageMessage | VoiceMessage | VideoMessage | LocationMessage | LinkMessage
    | UnknownMessage | SubscribeEvent | UnsubscribeEvent | EnterAgentEvent | LocationEvent
    | BatchJobResultEvent | ClickEvent | ViewEvent | ScanCodePushEvent | ScanCodeWaitMsgEvent
    | PicSysPhotoEvent | PicPhotoOrAlbumEvent | PicWeixinEvent | LocationSelectEvent
    | OpenApprovalChangeEvent | ShareAgentChangeEvent | ShareChainChangeEvent
    | CloseInactiveAgentEvent | ReopenInactiveAgentEvent | TemplateCardEvent
    | TemplateCardMenuEvent | CreateUserEvent | UpdateUserEvent | DeleteUserEvent
    | CreatePartyEvent | UpdatePartyEvent | DeletePartyEvent | UpdateTagEvent | UnknownEvent
)  # fmt: skip

CONCRETE_TYPES: tuple[type[InboundEvent], ...] = get_args(InboundEventType)
TAGS: dict[str, type[InboundEvent]] = {
    str(cls.__struct_config__.tag): cls for cls in CONCRETE_TYPES
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(InboundEventType)
_canonical = msgspec.json.Encoder(order="sorted")
_base_keys = ("ToUserName", "FromUserName", "CreateTime", "AgentID", "Event", "EventKey")


def encode_event(ev: InboundEvent) -> bytes:
    """JSON for the bus: WeCom's element names plus the ``type`` tag."""
    return _encoder.encode(ev)


def decode_event(data: bytes) -> InboundEvent:
    """Inverse of ``encode_event``. A tag this version does not know becomes ``UnknownEvent``.

    Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for corrupt data.
    """
    try:
        event: InboundEvent = _decoder.decode(data)
        return event
    except msgspec.ValidationError:
        raw = msgspec.json.decode(data)
        tag = raw.get("type") if isinstance(raw, dict) else None
        if not isinstance(tag, str) or tag in TAGS:
            raise
    base = {k: raw[k] for k in _base_keys if k in raw}
    return msgspec.convert({**base, "fields": raw}, UnknownEvent, strict=False)


# ---------------------------------------------------------------- dedup


def dedup_key(ev: InboundEvent, raw: Mapping[str, Any] | None = None) -> str:
    """A deterministic key (< 200 chars) identifying one WeCom delivery, stable across retries.

    Messages: ``msg:<MsgId>``. Everything else (events, and messages without a MsgId):
    ``evt:`` and a digest of the whole decrypted message ``raw`` in canonical form (sorted
    keys, repeats in order), so two events that differ in any element (two same-second
    ``update_tag`` with other AddUserItems) are both kept while a retry of one callback, which
    carries the same message, is not. Without ``raw`` the typed view is digested instead.
    """
    msg_id = getattr(ev, "msg_id", None)
    if isinstance(msg_id, int):
        return f"msg:{msg_id}"
    whole = _canonical.encode(raw if raw is not None else ev)
    return "evt:" + hashlib.sha256(whole).hexdigest()[:40]
