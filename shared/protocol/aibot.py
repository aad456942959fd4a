"""AI bot (智能机器人) callbacks: JSON envelope, decryption, typed parsing, encrypted replies.

Pure: no I/O, no logging. The cipher and the signature are those of app callbacks
(``CallbackCrypto``); what differs is the JSON around them (docs/aibot.md §2, §3):

* request body ``{"encrypt": …}``; the signature covers the ``encrypt`` string;
* reply ``{"encrypt", "msgsignature", "timestamp", "nonce"}`` whose nonce must be the
  callback URL's nonce;
* receive-id ``""`` for an enterprise's own bot.

Every refusal raises a ``CryptoError`` subclass (``JSONParseError`` for JSON), each worth a
4xx; messages never quote the input.
"""

from __future__ import annotations

import time
from typing import Any, cast

import msgspec

from shared.errors import CryptoError, SignatureError
from shared.protocol.crypto import CallbackCrypto
from shared.schemas.aibot import BOT_TAGS, BotCallback, BotCallbackType, UnknownBotCallback

__all__ = [
    "BOT_RECEIVE_ID",
    "DEFAULT_MAX_DEPTH",
    "JSONParseError",
    "build_bot_callback",
    "build_bot_url_verification",
    "decrypt_bot_callback",
    "decrypt_bot_reply",
    "encrypt_bot_reply",
    "parse_bot_callback",
]

BOT_RECEIVE_ID = ""  # "企业内部智能机器人场景中，ReceiveId为\"\"" (path/101033)
DEFAULT_MAX_DEPTH = 32
_MESSAGES = frozenset({"text", "image", "mixed", "voice", "file", "video", "stream"})


class JSONParseError(CryptoError):
    """The envelope or the decrypted callback is not acceptable JSON (WeCom's JSON lib: -40002)."""

    code = -40002
    reason = "bad_json"


class _Envelope(msgspec.Struct, frozen=True):
    encrypt: str


class _Reply(msgspec.Struct, frozen=True):
    encrypt: str
    msgsignature: str
    timestamp: str | int
    nonce: str


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_reply_decoder = msgspec.json.Decoder(_Reply)
_encoder = msgspec.json.Encoder()


def _decode_json(data: bytes, what: str, max_bytes: int) -> Any:
    if not data:
        raise JSONParseError(f"empty {what}")
    if len(data) > max_bytes:
        raise JSONParseError(f"{what} larger than {max_bytes} bytes")
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise JSONParseError(f"{what} is not valid JSON") from None
    except RecursionError:
        raise JSONParseError(f"{what} nests too deeply") from None


def _check_depth(value: Any, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JSONParseError(f"JSON nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def decrypt_bot_callback(
    crypto: CallbackCrypto,
    msg_signature: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    *,
    max_bytes: int,
) -> bytes:
    """POST body → signature check over ``encrypt`` → plaintext JSON bytes (receive-id checked)."""
    if len(body) > max_bytes:
        raise JSONParseError(f"body larger than {max_bytes} bytes")
    try:
        envelope = _envelope_decoder.decode(body)
    except RecursionError:
        raise JSONParseError("body nests too deeply") from None
    except msgspec.DecodeError:  # ValidationError included: no "encrypt" string
        raise JSONParseError('body is not {"encrypt": "<base64>"}') from None
    crypto.verify(msg_signature, timestamp, nonce, envelope.encrypt)
    return crypto.decrypt(envelope.encrypt)


def _tag(raw: dict[str, Any]) -> str:
    msgtype = raw.get("msgtype")
    if msgtype == "event":
        event = raw.get("event")
        eventtype = event.get("eventtype") if isinstance(event, dict) else None
        return f"aibot.event.{eventtype}" if isinstance(eventtype, str) else "aibot.unknown"
    return f"aibot.{msgtype}" if msgtype in _MESSAGES else "aibot.unknown"


def _unknown(raw: dict[str, Any], common: dict[str, Any]) -> UnknownBotCallback:
    event = raw.get("event")
    eventtype = event.get("eventtype") if isinstance(event, dict) else ""
    known: dict[str, Any] = {
        key: value
        for key in ("msgid", "aibotid", "chatid", "chattype", "msgtype")
        if isinstance(value := raw.get(key), str)
    }
    known["eventtype"] = eventtype if isinstance(eventtype, str) else ""
    return msgspec.convert(
        {**known, **common, "fields": raw},
        UnknownBotCallback,
        strict=False,
    )


def parse_bot_callback(
    plaintext: bytes,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    received_at: float | None = None,
) -> BotCallbackType:
    """Decrypted JSON → a typed callback; unknown types and malformed known ones kept whole.

    Refused (``JSONParseError``) only when it is not a JSON object, too large or too deep, or
    has no ``msgid`` text: without one it can be neither deduplicated nor answered.
    """
    raw = _decode_json(plaintext, "callback", max_bytes)
    if not isinstance(raw, dict):
        raise JSONParseError("callback is not a JSON object")
    _check_depth(raw, max_depth)
    msgid = raw.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise JSONParseError("callback has no msgid")
    sender = raw.get("from")
    created = raw.get("create_time")
    common: dict[str, Any] = {
        "ToUserName": raw.get("aibotid") if isinstance(raw.get("aibotid"), str) else "",
        "FromUserName": sender.get("userid", "") if isinstance(sender, dict) else "",
        "CreateTime": created
        if isinstance(created, int) and not isinstance(created, bool)
        else int(time.time() if received_at is None else received_at),
    }
    if not isinstance(common["FromUserName"], str):
        common["FromUserName"] = ""
    tag = _tag(raw)
    cls = BOT_TAGS.get(tag)
    if cls is not None and cls is not UnknownBotCallback:
        try:
            return cast("BotCallbackType", msgspec.convert({**raw, **common, "type": tag}, cls))
        except msgspec.ValidationError:
            pass  # a known type with fields of unexpected types: keep it whole
    return _unknown(raw, common)


def encrypt_bot_reply(
    crypto: CallbackCrypto, plaintext: bytes, timestamp: str, nonce: str
) -> bytes:
    """The passive-reply envelope; ``timestamp`` and ``nonce`` are the callback URL's own."""
    encrypted = crypto.encrypt(plaintext)
    signature = crypto.signature(timestamp, nonce, encrypted)
    return _encoder.encode(
        {"encrypt": encrypted, "msgsignature": signature, "timestamp": timestamp, "nonce": nonce}
    )


# ---------------------------------------------------------------- WeCom's side (tests, fake)


def build_bot_callback(
    crypto: CallbackCrypto, callback: dict[str, Any] | BotCallback, *, timestamp: str, nonce: str
) -> tuple[dict[str, str], bytes]:
    """What WeCom posts for ``callback``: the query parameters and the JSON body."""
    plaintext = _encoder.encode(callback)
    encrypted = crypto.encrypt(plaintext)
    params = {
        "msg_signature": crypto.signature(timestamp, nonce, encrypted),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    return params, _encoder.encode({"encrypt": encrypted})


def build_bot_url_verification(
    crypto: CallbackCrypto, echo: bytes, *, timestamp: str, nonce: str
) -> dict[str, str]:
    """Query parameters of the GET verification whose expected answer is ``echo``."""
    return crypto.build_url_verification(echo, timestamp=timestamp, nonce=nonce)


def decrypt_bot_reply(crypto: CallbackCrypto, body: bytes, *, nonce: str) -> Any:
    """A passive reply as WeCom reads it: signature and nonce checked → the plaintext JSON.

    An empty body (allowed: "回复空包") gives None.
    """
    if not body:
        return None
    try:
        reply = _reply_decoder.decode(body)
    except msgspec.DecodeError:
        raise JSONParseError("reply is not the encrypted JSON envelope") from None
    if reply.nonce != nonce:
        raise SignatureError("reply nonce is not the callback's")
    crypto.verify(reply.msgsignature, str(reply.timestamp), reply.nonce, reply.encrypt)
    return msgspec.json.decode(crypto.decrypt(reply.encrypt))
