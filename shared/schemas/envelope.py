"""What travels on the bus: one JSON document in the ``data`` field of each stream entry.

``EventEnvelope`` is what the ingress stores on ``<prefix>:events``; ``OutboxEntry`` is a send
request on ``<prefix>:outbox``. New fields always get defaults, so consumers of an older version
keep working during a rolling deploy.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from shared.schemas.inbound import InboundEventType, decode_event
from shared.schemas.outbound import MediaUpload, SendRequest, SendRequestType

__all__ = [
    "EventEnvelope",
    "OutboxEntry",
    "decode_envelope",
    "decode_outbox",
    "encode_envelope",
    "encode_outbox",
    "outbox_entry",
]


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    app: str  # the app name ("default", or one of the apps file)
    received_at: float  # unix time the ingress accepted it
    trace_id: str  # logged by every later stage
    dedup_key: str  # what made it unique: msg:<MsgId>, or evt:<digest of the whole message>
    event: InboundEventType  # the typed view: the fields this version models
    # The whole decrypted message as WeCom sent it: element → text, dict, or a list when the
    # element repeats; None when empty. Holds what ``event`` does not model (new fields,
    # repeats, every field of an unknown type). Empty in entries written before it existed.
    raw: dict[str, Any] = {}
    traceparent: str = ""  # W3C trace context of the ingress span ("" when not tracing)


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # deterministic: the same event and handler always give the same id
    app: str
    trace_id: str
    created_at: float
    request: SendRequestType
    origin: str = ""  # who asked: "handler:<name>", "api", "cli"
    upload: MediaUpload | None = None  # an attachment the sender uploads first (≤ 2 MB)
    traceparent: str = ""  # W3C trace context of the span that asked ("" when not tracing)


class _RawEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    received_at: float
    trace_id: str
    dedup_key: str
    event: msgspec.Raw
    raw: dict[str, Any] = {}
    traceparent: str = ""


_envelope_decoder = msgspec.json.Decoder(EventEnvelope)
_raw_envelope_decoder = msgspec.json.Decoder(_RawEnvelope)
_outbox_decoder = msgspec.json.Decoder(OutboxEntry)
_encoder = msgspec.json.Encoder()


def encode_envelope(envelope: EventEnvelope) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(data: bytes) -> EventEnvelope:
    """Decode an events entry; an event type from a newer producer becomes ``UnknownEvent``."""
    try:
        return _envelope_decoder.decode(data)
    except msgspec.ValidationError:
        raw = _raw_envelope_decoder.decode(data)
        event = cast("InboundEventType", decode_event(bytes(raw.event)))
        return EventEnvelope(
            app=raw.app,
            received_at=raw.received_at,
            trace_id=raw.trace_id,
            dedup_key=raw.dedup_key,
            event=event,
            raw=raw.raw,
            traceparent=raw.traceparent,
        )


def outbox_entry(
    *,
    id: str,
    app: str,
    trace_id: str,
    created_at: float,
    request: SendRequest,
    origin: str,
    traceparent: str = "",
) -> OutboxEntry:
    """Build an OutboxEntry from any SendRequest (the union is only for decoding).
    ``traceparent``: ``shared.tracing.traceparent()`` where a span asks for the send."""
    return OutboxEntry(
        id=id,
        app=app,
        trace_id=trace_id,
        created_at=created_at,
        request=cast("SendRequestType", request),
        origin=origin,
        traceparent=traceparent,
    )


def encode_outbox(entry: OutboxEntry) -> bytes:
    return _encoder.encode(entry)


def decode_outbox(data: bytes) -> OutboxEntry:
    return _outbox_decoder.decode(data)
