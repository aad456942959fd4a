"""Typed model of the JSON callbacks of WeCom AI bots (智能机器人), see docs/aibot.md.

Attributes keep WeCom's own lower-case JSON names (``msgid``, ``aibotid``, ``chattype`` …;
``from`` is ``from_`` in Python). The tag field ``type`` is ``aibot.<msgtype>`` for messages
and refresh polls and ``aibot.event.<eventtype>`` for events; what this version does not model
becomes ``UnknownBotCallback`` with every field WeCom sent.

Every callback is an ``InboundEvent`` (so routers dispatch it like app events) whose three
base fields keep the names of app callbacks (``ToUserName`` = the bot id, ``FromUserName`` =
the member, ``CreateTime``): a consumer that predates bots decodes a bot entry of the events
stream as an ``UnknownEvent`` of that member, which no behaviour answers, instead of failing
on it. Every other field has a default, so new WeCom fields never break parsing.
"""

from __future__ import annotations

from typing import Any, TypeAlias, get_args

import msgspec

from shared.schemas.inbound import InboundEvent

__all__ = [
    "BOT_TAGS",
    "BotCallback",
    "BotCallbackType",
    "BotEnterChat",
    "BotEnvelope",
    "BotEvent",
    "BotEventBody",
    "BotFeedbackEvent",
    "BotFile",
    "BotImage",
    "BotMessage",
    "BotMixed",
    "BotStreamRefresh",
    "BotTemplateCardEvent",
    "BotText",
    "BotUser",
    "BotVideo",
    "BotVoice",
    "FeedbackInfo",
    "MediaContent",
    "MixedContent",
    "MixedItem",
    "OptionIds",
    "Quote",
    "SelectedItem",
    "SelectedItems",
    "StreamRef",
    "TemplateCardAction",
    "TextContent",
    "UnknownBotCallback",
    "decode_bot_envelope",
    "encode_bot_envelope",
]  # fmt: skip


class _Part(msgspec.Struct, frozen=True, kw_only=True):
    """Nested objects: frozen, keyword-only, unknown keys ignored."""


class BotUser(_Part, frozen=True):
    userid: str = ""
    corpid: str | None = None  # not sent for an enterprise's own bot


class TextContent(_Part, frozen=True):
    content: str = ""


class MediaContent(_Part, frozen=True):
    """image, file and video: a URL valid five minutes, its bytes AES-encrypted."""

    url: str = ""


class MixedItem(_Part, frozen=True):
    msgtype: str = ""
    text: TextContent | None = None
    image: MediaContent | None = None


class MixedContent(_Part, frozen=True):
    msg_item: list[MixedItem] = []


class Quote(_Part, frozen=True):
    """The message a text or mixed message quotes."""

    msgtype: str = ""
    text: TextContent | None = None
    image: MediaContent | None = None
    mixed: MixedContent | None = None
    voice: TextContent | None = None
    file: MediaContent | None = None
    video: MediaContent | None = None


class StreamRef(_Part, frozen=True):
    id: str = ""


class OptionIds(_Part, frozen=True):
    option_id: list[str] = []


class SelectedItem(_Part, frozen=True):
    question_key: str = ""
    option_ids: OptionIds | None = None


class SelectedItems(_Part, frozen=True):
    selected_item: list[SelectedItem] = []


class TemplateCardAction(_Part, frozen=True):
    card_type: str = ""
    event_key: str = ""
    task_id: str = ""
    selected_items: SelectedItems | None = None


class FeedbackInfo(_Part, frozen=True):
    id: str = ""
    type: int = 0  # 1 accurate, 2 inaccurate, 3 cancelled
    content: str = ""
    inaccurate_reason_list: list[int] = []


class BotEventBody(_Part, frozen=True):
    eventtype: str = ""
    enter_chat: dict[str, Any] | None = None
    template_card_event: TemplateCardAction | None = None
    feedback_event: FeedbackInfo | None = None


# ---------------------------------------------------------------- callbacks


class BotCallback(InboundEvent, rename=None, frozen=True, kw_only=True):
    """Anything WeCom posts to a bot's callback URL.

    An ``InboundEvent``, so the same routers dispatch it; its own fields keep WeCom's names.
    """

    # The app-callback names (see the module docstring), filled by the ingress.
    to_user: str = msgspec.field(default="", name="ToUserName")  # the bot's aibotid
    from_user: str = msgspec.field(default="", name="FromUserName")  # the member's userid
    create_time: int = msgspec.field(default=0, name="CreateTime")
    msgid: str
    aibotid: str = ""
    chatid: str = ""
    chattype: str = ""
    from_: BotUser = msgspec.field(default_factory=BotUser, name="from")
    msgtype: str = ""
    response_url: str = ""

    @property
    def conversation(self) -> str:
        """Where a reply belongs: the group's chatid, else the member's userid."""
        return self.chatid if self.chattype == "group" and self.chatid else self.from_.userid


class BotMessage(BotCallback, frozen=True, kw_only=True):
    """A member's message: answered with a stream."""


class BotText(BotMessage, tag="aibot.text", frozen=True, kw_only=True):
    text: TextContent = TextContent()
    quote: Quote | None = None

    @property
    def content(self) -> str:
        """The text as typed (in groups it still holds the "@bot" mention)."""
        return self.text.content


class BotImage(BotMessage, tag="aibot.image", frozen=True, kw_only=True):
    image: MediaContent = MediaContent()


class BotMixed(BotMessage, tag="aibot.mixed", frozen=True, kw_only=True):
    mixed: MixedContent = MixedContent()
    quote: Quote | None = None


class BotVoice(BotMessage, tag="aibot.voice", frozen=True, kw_only=True):
    voice: TextContent = TextContent()


class BotFile(BotMessage, tag="aibot.file", frozen=True, kw_only=True):
    file: MediaContent = MediaContent()


class BotVideo(BotMessage, tag="aibot.video", frozen=True, kw_only=True):
    video: MediaContent = MediaContent()


class BotStreamRefresh(BotCallback, tag="aibot.stream", frozen=True, kw_only=True):
    """WeCom polling a stream we started; answered from Redis, never stored."""

    stream: StreamRef = StreamRef()


class BotEvent(BotCallback, frozen=True, kw_only=True):
    event: BotEventBody = BotEventBody()


class BotEnterChat(BotEvent, tag="aibot.event.enter_chat", frozen=True, kw_only=True):
    pass


class BotTemplateCardEvent(
    BotEvent, tag="aibot.event.template_card_event", frozen=True, kw_only=True
):
    pass


class BotFeedbackEvent(BotEvent, tag="aibot.event.feedback_event", frozen=True, kw_only=True):
    pass


class UnknownBotCallback(BotCallback, tag="aibot.unknown", frozen=True, kw_only=True):
    """A msgtype or eventtype this version does not model; ``fields`` is all WeCom sent."""

    eventtype: str = ""
    fields: dict[str, Any] = msgspec.field(default_factory=dict)


BotCallbackType: TypeAlias = (
    BotText | BotImage | BotMixed | BotVoice | BotFile | BotVideo
    | BotStreamRefresh | BotEnterChat | BotTemplateCardEvent | BotFeedbackEvent | UnknownBotCallback
)  # fmt: skip

BOT_TAGS: dict[str, type[BotCallback]] = {
    str(cls.__struct_config__.tag): cls for cls in get_args(BotCallbackType)
}


# ---------------------------------------------------------------- on the bus


class BotEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A bot callback on ``<prefix>:events``.

    The first five fields are those of app entries (``app`` is ``bot:<name>``, never an app
    name since app names hold no ``:``), so older consumers read it as an unknown event.
    """

    app: str
    received_at: float
    trace_id: str
    dedup_key: str
    event: BotCallbackType
    bot: str  # the bot's name (its table in WECOM_BOTS_FILE)
    stream_id: str = ""  # the stream a message's answer goes to ("" for events)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BotEnvelope)


def encode_bot_envelope(envelope: BotEnvelope) -> bytes:
    return _encoder.encode(envelope)


def decode_bot_envelope(data: bytes) -> BotEnvelope:
    """Raises ``msgspec.DecodeError``/``ValidationError`` for anything but a bot entry."""
    return _decoder.decode(data)
