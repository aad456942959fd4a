"""WeCom's side of the callback: build the plaintext XML, sign, encrypt, push, retry; and verify.

A push behaves as WeCom does (docs/architecture.md): POST to the app's URL, give up on an
attempt after five seconds, and treat anything but HTTP 200 (or no answer) as a failure to
retry, up to three retries. Every attempt carries the same plaintext (same MsgId and
CreateTime) but is encrypted afresh with a new nonce, so a receiver must deduplicate on the
message, not on the bytes.
``duplicate`` delivers the same callback several times even when the first succeeds.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from typing import Any, Literal

import httpx
import msgspec

from devkit.fakewecom.api import sniff_type
from devkit.fakewecom.state import CallbackRecord, FakeApp, FakeState, ResponseCode
from shared.errors import CryptoError
from shared.protocol.crypto import CallbackCrypto

__all__ = ["CallbackSpec", "build_plaintext", "crypto_for", "push", "verify_url"]

_TEMPLATE_EVENTS = ("template_card_event", "template_card_menu_event")
_REPLY_FIELD = re.compile(
    rb"<(Encrypt|MsgSignature|TimeStamp|Nonce)>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</"
)
_KEYED_EVENTS = ("enter_agent", "click", "view", *_TEMPLATE_EVENTS)  # EventKey always present


class CallbackSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /fake/callbacks``: what a member did, and how to deliver it."""

    app: str = "default"
    from_user: str = msgspec.field(name="from", default="alice")
    type: Literal["text", "location", "event", "image"] = "text"
    content: str | None = None  # text
    image: str | None = None  # image: the picture, base64 (JPG or PNG); media/get serves it
    filename: str = "image.png"
    event: str | None = None  # event: enter_agent, click, view, LOCATION, template_card_event…
    event_key: str | None = None
    latitude: float | None = None  # LOCATION event; location message (Location_X)
    longitude: float | None = None
    precision: float | None = None
    label: str | None = None  # location message
    task_id: str | None = None  # template card events
    card_type: str | None = None
    retries: int | None = None  # default 3, as WeCom
    duplicate: int = 1
    timeout: float | None = None  # default 5 s, as WeCom
    retry_delay: float | None = None

    def problem(self) -> str | None:
        """Why this spec cannot become a callback, or None."""
        if self.type == "text" and not self.content:
            return "a text message needs content"
        if self.type == "image" and _image(self.image) is None:
            return "an image message needs 'image': a JPG or PNG picture in base64"
        if self.type == "event" and not self.event:
            return "an event needs its name in 'event'"
        if self.type == "location" and (self.latitude is None or self.longitude is None):
            return "a location message needs latitude and longitude"
        if not self.from_user:
            return "'from' must name a member"
        if not 1 <= self.duplicate <= 10 or not 0 <= (self.retries or 0) <= 10:
            return "duplicate must be 1 to 10 and retries 0 to 10"
        if self.timeout is not None and not 0 < self.timeout <= 30:
            return "timeout must be more than 0 and at most 30 seconds"
        if self.retry_delay is not None and not 0 <= self.retry_delay <= 30:
            return "retry_delay must be 0 to 30 seconds"
        return None


def _image(data: str | None) -> bytes | None:
    try:
        content = base64.b64decode(data or "", validate=True)
    except ValueError:
        return None
    return content if content.startswith((b"\xff\xd8\xff", b"\x89PNG")) else None


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def build_plaintext(
    app: FakeApp,
    spec: CallbackSpec,
    *,
    create_time: int,
    msg_id: int | None,
    response_code: str,
    media_id: str = "",
) -> bytes:
    """The decrypted XML WeCom sends for ``spec``."""
    parts = [
        f"<ToUserName>{_cdata(app.corp_id)}</ToUserName>",
        f"<FromUserName>{_cdata(spec.from_user)}</FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<MsgType>{_cdata(spec.type)}</MsgType>",
    ]
    if spec.type == "text":
        parts.append(f"<Content>{_cdata(spec.content or '')}</Content>")
    elif spec.type == "image":
        parts += [
            f"<PicUrl>{_cdata('https://wework.qpic.cn/fake/' + media_id[:16])}</PicUrl>",
            f"<MediaId>{_cdata(media_id)}</MediaId>",
        ]
    elif spec.type == "location":
        parts += [
            f"<Location_X>{spec.latitude}</Location_X>",
            f"<Location_Y>{spec.longitude}</Location_Y>",
            "<Scale>15</Scale>",
            f"<Label>{_cdata(spec.label or '')}</Label>",
        ]
    else:
        event = spec.event or ""
        parts.append(f"<Event>{_cdata(event)}</Event>")
        if spec.event_key is not None or event in _KEYED_EVENTS:
            parts.append(f"<EventKey>{_cdata(spec.event_key or '')}</EventKey>")
        if event == "LOCATION":
            parts += [
                f"<Latitude>{spec.latitude or 0}</Latitude>",
                f"<Longitude>{spec.longitude or 0}</Longitude>",
                f"<Precision>{spec.precision or 0}</Precision>",
            ]
        if event in _TEMPLATE_EVENTS:
            parts += [
                f"<TaskId>{_cdata(spec.task_id or '')}</TaskId>",
                f"<CardType>{_cdata(spec.card_type or '')}</CardType>",
                f"<ResponseCode>{_cdata(response_code)}</ResponseCode>",
            ]
    if msg_id is not None:
        parts.append(f"<MsgId>{msg_id}</MsgId>")
    parts.append(f"<AgentID>{app.agent_id}</AgentID>")
    return ("<xml>" + "".join(parts) + "</xml>").encode()


def crypto_for(app: FakeApp) -> CallbackCrypto:
    return CallbackCrypto(app.token.get(), app.encoding_aes_key.get(), app.corp_id)


def _nonce() -> str:
    return str(secrets.randbelow(10**10))


def _passive_reply(crypto: CallbackCrypto, body: bytes) -> dict[str, str]:
    """Check and open a passive reply; an empty body is the plain ack."""
    fields = {m[0].decode(): m[1].decode("utf-8", "replace") for m in _REPLY_FIELD.findall(body)}
    try:
        crypto.verify(
            fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
        )
        return {"passive_reply": crypto.decrypt(fields["Encrypt"]).decode("utf-8", "replace")}
    except KeyError:
        return {"passive_reply_error": "not the encrypted reply envelope"}
    except CryptoError as exc:
        return {"passive_reply_error": exc.reason}


async def _attempt(
    client: httpx.AsyncClient, crypto: CallbackCrypto, app: FakeApp, plaintext: bytes, wait: float
) -> dict[str, Any]:
    assert app.callback_url is not None
    params, body = crypto.build_callback(
        plaintext, timestamp=str(int(time.time())), nonce=_nonce(), agent_id=app.agent_id
    )
    started = time.perf_counter()
    outcome: dict[str, Any] = {"status": None}
    try:
        response = await client.post(
            app.callback_url, params=params, content=body, timeout=httpx.Timeout(wait)
        )
    except httpx.TimeoutException:
        outcome["error"] = f"no answer within {wait:g} s"
    except httpx.TransportError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    else:
        outcome["status"] = response.status_code
        if response.status_code == 200 and response.content:
            outcome.update(_passive_reply(crypto, response.content))
    outcome["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return outcome


async def push(state: FakeState, client: httpx.AsyncClient, spec: CallbackSpec) -> CallbackRecord:
    """Deliver one member action to the app, WeCom's way; the record lists every attempt."""
    app = state.apps[spec.app]
    crypto = crypto_for(app)
    cfg = state.config
    retries = cfg.callback_retries if spec.retries is None else spec.retries
    wait = spec.timeout or cfg.callback_timeout
    pause = cfg.callback_retry_delay if spec.retry_delay is None else spec.retry_delay
    msg_id = None if spec.type == "event" else secrets.randbits(63)
    response_code = secrets.token_urlsafe(32)
    if spec.type == "event" and spec.event in _TEMPLATE_EVENTS:
        state.response_codes[response_code] = ResponseCode(app.name, state.clock(), None)
    media_id = ""
    if spec.type == "image" and (picture := _image(spec.image)) is not None:
        media_id = state.store_media(
            app.name, "image", spec.filename, picture, sniff_type(picture)
        ).media_id
    plaintext = build_plaintext(
        app,
        spec,
        create_time=int(time.time()),
        msg_id=msg_id,
        response_code=response_code,
        media_id=media_id,
    )
    record = state.new_callback(
        app.name,
        from_user=spec.from_user,
        kind=spec.type,
        content=spec.content,
        event=spec.event,
        event_key=spec.event_key,
        msg_id=msg_id,
    )
    delivered = 0
    for delivery in range(1, spec.duplicate + 1):
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(pause)
            outcome = await _attempt(client, crypto, app, plaintext, wait)
            record.attempts.append({"delivery": delivery, **outcome})
            state.touch(record)
            if outcome["status"] == 200:
                delivered += 1
                break
    record.ok = delivered == spec.duplicate
    state.touch(record)
    return record


async def verify_url(app: FakeApp, client: httpx.AsyncClient, wait: float) -> dict[str, Any]:
    """The console's "save" handshake: GET with an encrypted echo, expect the plain echo back."""
    assert app.callback_url is not None
    echo = str(secrets.randbits(63)).encode()  # WeCom's echoes are long digit strings
    params = crypto_for(app).build_url_verification(
        echo, timestamp=str(int(time.time())), nonce=_nonce()
    )
    try:
        response = await client.get(app.callback_url, params=params, timeout=wait)
    except httpx.TimeoutException:
        return {"ok": False, "detail": f"no answer within {wait:g} s (WeCom wants 1 s)"}
    except httpx.TransportError as exc:
        return {"ok": False, "detail": f"cannot reach {app.callback_url}: {type(exc).__name__}"}
    if response.status_code != 200:
        return {"ok": False, "detail": f"answered HTTP {response.status_code}, not 200"}
    if response.content != echo:
        shown = response.content[:80].decode("utf-8", "replace")
        return {
            "ok": False,
            "detail": f"answered {shown!r}: not the decrypted echostr (no quotes, BOM or newline)",
        }
    return {"ok": True, "detail": "the answer is the decrypted echostr"}
