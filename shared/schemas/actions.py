"""What a handler may ask of the sender besides message/send: outbox *actions*.

An action travels on ``<prefix>:outbox`` like a send request, committed with the event's ack
and sent once, but in a field of its own (``action`` rather than ``data``), so code reading
send requests never meets one. Kinds (the ``kind`` tag):

``recall``                 message/recall of a msgid (a message of the last 24 hours)
``update_template_card``   message/update_template_card with a ResponseCode (single use, 72 h)
``aibot_response``         one active reply to an AI bot's ``response_url`` (once, within 1 h)

Each is validated when the handler publishes it, with the validators the HTTP API uses, so a
mistake fails the handler, not the sender. A sender older than these kinds rejects the entry to
the dead letter (replay it after the upgrade).

Attachments are send requests, not actions: ``ImageSend.upload(...)`` (and ``FileSend``,
``VoiceSend``, ``VideoSend``) carries the file's bytes in the outbox entry, at most
``shared.schemas.outbound.INLINE_MAX`` (2 MB), and the sender uploads it (media/upload) right
before the send, once: the media_id is kept under the request's id for a redelivery.
"""

from __future__ import annotations

from typing import Any, Self, TypeAlias, TypeVar

import msgspec

from shared.errors import SchemaError
from shared.protocol.aibot_reply import markdown_response, template_card_response
from shared.schemas.cards import TemplateCard, UpdateButton, UpdatedCard, UpdateTemplateCardRequest
from shared.schemas.inbound import TemplateCardEvent, TemplateCardMenuEvent
from shared.schemas.outbound import RecallRequest, validate

__all__ = [
    "Action",
    "ActionEntry",
    "ActionType",
    "BotResponse",
    "Recall",
    "UpdateCard",
    "check_action",
    "decode_action",
    "encode_action",
]

CardEvent: TypeAlias = TemplateCardEvent | TemplateCardMenuEvent


class Action(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True):
    """Base of the outbox actions; use a subclass."""


class Recall(Action, tag="recall", frozen=True, kw_only=True):
    """Recall a message this app sent (by the msgid the send answered)."""

    msgid: str


class UpdateCard(Action, tag="update_template_card", frozen=True, kw_only=True):
    """Update the template card a member clicked (its ResponseCode), for some or all."""

    update: UpdateTemplateCardRequest

    @classmethod
    def button(cls, event: CardEvent, replace_name: str, *, everyone: bool = False) -> Self:
        """Grey out the card's buttons showing ``replace_name``, for the member who clicked
        (or for every recipient)."""
        return cls._for(event, everyone, button=UpdateButton(replace_name=replace_name))

    @classmethod
    def card(cls, event: CardEvent, card: TemplateCard, *, everyone: bool = False) -> Self:
        """Replace the card the member clicked with ``card``."""
        updated = msgspec.convert(msgspec.to_builtins(card), UpdatedCard)
        return cls._for(event, everyone, template_card=updated)

    @classmethod
    def _for(cls, event: CardEvent, everyone: bool, **change: Any) -> Self:
        if not event.response_code:
            raise SchemaError("$.response_code", "the event carries no ResponseCode")
        who = {"atall": 1} if everyone else {"userids": (event.from_user,)}
        request = UpdateTemplateCardRequest(response_code=event.response_code, **who, **change)
        return check_action(cls(update=request))


class BotResponse(Action, tag="aibot_response", frozen=True, kw_only=True):
    """The one active reply an AI-bot message's ``response_url`` allows (within an hour)."""

    url: str
    body: dict[str, Any]

    @classmethod
    def markdown(cls, url: str, content: str) -> Self:
        return check_action(cls(url=url, body=msgspec.json.decode(markdown_response(content))))

    @classmethod
    def template_card(cls, url: str, card: dict[str, Any]) -> Self:
        return check_action(cls(url=url, body=msgspec.json.decode(template_card_response(card))))


ActionType: TypeAlias = Recall | UpdateCard | BotResponse


A = TypeVar("A", bound=Action)


def check_action(action: A) -> A:
    """``action`` unchanged, or SchemaError naming what WeCom would refuse."""
    if isinstance(action, Recall):
        validate(RecallRequest(msgid=action.msgid))
    elif isinstance(action, UpdateCard):
        validate(action.update)
    elif isinstance(action, BotResponse):
        if not action.url.startswith(("https://", "http://")):
            raise SchemaError("$.url", "must be the response_url of the bot's message")
    else:
        raise TypeError(f"not an outbox action: {type(action).__name__}")
    return action


class ActionEntry(msgspec.Struct, frozen=True, kw_only=True):
    """The ``action`` field of an outbox entry."""

    id: str  # deterministic, as send requests' ids
    app: str
    trace_id: str
    created_at: float
    action: ActionType
    origin: str = ""


_decoder = msgspec.json.Decoder(ActionEntry)
_encoder = msgspec.json.Encoder()


def encode_action(entry: ActionEntry) -> bytes:
    return _encoder.encode(entry)


def decode_action(data: bytes) -> ActionEntry:
    return _decoder.decode(data)
