"""Plaintext of the passive replies an AI bot may give (docs/aibot.md §4), as JSON bytes.

Encrypt the result with ``shared.protocol.aibot.encrypt_bot_reply``. The builders enforce
WeCom's documented limits on what we produce: stream content is cut to 20480 bytes at a
character boundary (the reply carries the whole text so far, so the newest text is what gets
cut); anything else WeCom would refuse raises ``SchemaError`` naming the field, a programming
error rather than bad input.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from shared.errors import SchemaError

__all__ = [
    "MAX_FEEDBACK_ID_BYTES",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_STREAM_BYTES",
    "RESPONSE_PATH",
    "check_response_url",
    "fit_content",
    "markdown_response",
    "stream_image",
    "stream_reply",
    "stream_with_template_card_reply",
    "template_card_reply",
    "template_card_response",
    "text_reply",
    "update_template_card_reply",
]

MAX_STREAM_BYTES = 20480
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_FEEDBACK_ID_BYTES = 256
_TASK_ID = re.compile(r"[0-9A-Za-z_\-@]{1,128}")
_encoder = msgspec.json.Encoder()

Card = Mapping[str, Any] | msgspec.Struct


def fit_content(text: str, limit: int = MAX_STREAM_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


def stream_image(data: bytes) -> dict[str, Any]:
    """One ``msg_item`` image: base64 of the raw JPG/PNG bytes and their md5."""
    if not data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        raise SchemaError("$.stream.msg_item[].image", "must be JPG or PNG")
    if len(data) > MAX_IMAGE_BYTES:
        raise SchemaError("$.stream.msg_item[].image", f"larger than {MAX_IMAGE_BYTES} bytes")
    return {
        "msgtype": "image",
        "image": {
            "base64": base64.b64encode(data).decode("ascii"),
            "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        },
    }


def _stream(
    stream_id: str,
    content: str,
    finish: bool,
    images: Sequence[bytes],
    feedback_id: str | None,
) -> dict[str, Any]:
    if not stream_id:
        raise SchemaError("$.stream.id", "must not be empty")
    if images and not finish:
        raise SchemaError("$.stream.msg_item", "images only with finish=true")
    if len(images) > MAX_IMAGES:
        raise SchemaError("$.stream.msg_item", f"at most {MAX_IMAGES} images")
    stream: dict[str, Any] = {"id": stream_id, "finish": finish, "content": fit_content(content)}
    if images:
        stream["msg_item"] = [stream_image(image) for image in images]
    if feedback_id is not None:
        if not feedback_id or len(feedback_id.encode()) > MAX_FEEDBACK_ID_BYTES:
            raise SchemaError("$.stream.feedback.id", f"1-{MAX_FEEDBACK_ID_BYTES} bytes")
        stream["feedback"] = {"id": feedback_id}
    return stream


def stream_reply(
    stream_id: str,
    content: str,
    *,
    finish: bool,
    images: Sequence[bytes] = (),
    feedback_id: str | None = None,
) -> bytes:
    """A stream reply: the whole text so far, and whether it is the last."""
    return _encoder.encode(
        {"msgtype": "stream", "stream": _stream(stream_id, content, finish, images, feedback_id)}
    )


def text_reply(content: str) -> bytes:
    """Text: allowed only as the answer to enter_chat (a welcome)."""
    return _encoder.encode({"msgtype": "text", "text": {"content": content}})


def _card(card: Card) -> dict[str, Any]:
    value = msgspec.to_builtins(card) if isinstance(card, msgspec.Struct) else dict(card)
    if not isinstance(value, dict) or not isinstance(value.get("card_type"), str):
        raise SchemaError("$.template_card.card_type", "must be set")
    task_id = value.get("task_id")
    if task_id is not None and not (isinstance(task_id, str) and _TASK_ID.fullmatch(task_id)):
        raise SchemaError("$.template_card.task_id", "1-128 of 0-9, A-Z, a-z, '_', '-', '@'")
    return value


def template_card_reply(card: Card) -> bytes:
    return _encoder.encode({"msgtype": "template_card", "template_card": _card(card)})


def stream_with_template_card_reply(
    stream_id: str, content: str, card: Card, *, finish: bool
) -> bytes:
    """A stream and a card together; the card may be sent once per message."""
    return _encoder.encode(
        {
            "msgtype": "stream_with_template_card",
            "stream": _stream(stream_id, content, finish, (), None),
            "template_card": _card(card),
        }
    )


def update_template_card_reply(card: Card, *, userids: Sequence[str] | None = None) -> bytes:
    """The answer to template_card_event; ``userids`` None updates it for every member."""
    value = _card(card)
    if not value.get("task_id"):
        raise SchemaError("$.template_card.task_id", "must be the event's task_id")
    body: dict[str, Any] = {"response_type": "update_template_card", "template_card": value}
    if userids is not None:
        body["userids"] = list(userids)
    return _encoder.encode(body)


# ---------------------------------------------------------------- response_url (path/101138)

RESPONSE_PATH = "/cgi-bin/aibot/response"


def markdown_response(content: str, *, feedback_id: str | None = None) -> bytes:
    """An active reply through a ``response_url``: plain JSON, markdown ≤ 20480 bytes."""
    if len(content.encode()) > MAX_STREAM_BYTES:
        raise SchemaError("$.markdown.content", f"at most {MAX_STREAM_BYTES} bytes")
    markdown: dict[str, Any] = {"content": content}
    if feedback_id is not None:
        if not feedback_id or len(feedback_id.encode()) > MAX_FEEDBACK_ID_BYTES:
            raise SchemaError("$.markdown.feedback.id", f"1-{MAX_FEEDBACK_ID_BYTES} bytes")
        markdown["feedback"] = {"id": feedback_id}
    return _encoder.encode({"msgtype": "markdown", "markdown": markdown})


def template_card_response(card: Card) -> bytes:
    """A template card through a ``response_url`` (WeCom allows it in single chats only)."""
    return template_card_reply(card)


def check_response_url(url: str, api_base: str) -> str:
    """``url`` if it is a response_url of ``api_base`` (WeCom's, or the fake's), else SchemaError.

    The URL comes from an authenticated callback, but it is still only ever posted to WeCom's
    own host and path: nothing else a callback says can make the service call elsewhere.
    """
    parsed, base = urlsplit(url), urlsplit(api_base)
    query = parse_qs(parsed.query, keep_blank_values=True)
    if (
        (parsed.scheme, parsed.netloc) != (base.scheme, base.netloc)
        or parsed.path != RESPONSE_PATH
        or set(query) != {"response_code"}
        or len(query["response_code"]) != 1
        or not query["response_code"][0]
        or parsed.fragment
    ):
        raise SchemaError("$.response_url", f"not a {RESPONSE_PATH} URL of {api_base}")
    return url
