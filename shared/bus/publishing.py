"""What the handlers of one event publish: send requests and actions with deterministic ids,
and the outbox entries they become (written with the event's ack by the consumer's commit)."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, cast

import msgspec

from shared import tracing
from shared.bus import metrics
from shared.bus.actions import Action, Item, PublishedAction, action_outputs
from shared.bus.delivery import Output
from shared.schemas.envelope import EventEnvelope, OutboxEntry, encode_outbox
from shared.schemas.outbound import Attachment, MediaUpload, SendRequest, SendRequestType

if TYPE_CHECKING:
    from shared.bus.router import Context

__all__ = ["SYS", "Outbox", "Published", "outputs", "request_id"]

log = logging.getLogger("wecom_bus.router")


def request_id(stream: str, entry_id: str, handler: str, index: int) -> str:
    """The outbox id of the ``index``-th request ``handler`` made for one event entry."""
    key = f"{stream}\x00{entry_id}\x00{handler}\x00{index}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


class Published(msgspec.Struct, frozen=True, kw_only=True):
    """A send request made while handling one event, with its deterministic id."""

    id: str
    handler: str
    request: SendRequest
    upload: MediaUpload | None = None  # an attachment's file, uploaded by the sender


SYS = "sys"  # the FromUserName of WeCom's system events (contact changes…): not a member


def _without_sys(request: SendRequest) -> SendRequest | None:
    """``request`` without the recipient "sys"; None when nobody else is left."""
    users = "|".join(u for u in (request.touser or "").split("|") if u and u != SYS)
    if not (users or request.toparty or request.totag):
        return None
    return msgspec.structs.replace(request, touser=users or None)


class Outbox:
    """Collects the requests of one dispatch; shared by the contexts of its handlers."""

    def __init__(self) -> None:
        self.items: list[Published] = []
        self.actions: list[PublishedAction] = []

    def add(self, ctx: Context, item: Item) -> str:
        if isinstance(item, Action):  # ids of their own, apart from the send requests
            index = sum(p.handler == ctx.handler for p in self.actions)
            rid = request_id(ctx.stream, ctx.entry_id, f"{ctx.handler}!action", index)
            self.actions.append(PublishedAction.checked(rid, ctx.handler, item))
            return rid
        request = item.request if isinstance(item, Attachment) else item
        upload = item.upload if isinstance(item, Attachment) else None
        if not isinstance(request, SendRequest):
            raise TypeError(f"{ctx.handler}: expected a SendRequest, got {type(request).__name__}")
        if ctx.event.from_user == SYS and SYS in (request.touser or "").split("|"):
            kept = _without_sys(request)
            log.warning(
                "reply to a sys event addressed to 'sys' (not a member): %s",
                "dropped" if kept is None else "'sys' left out",
                extra={"handler": ctx.handler, "trace_id": ctx.trace_id},
            )
            metrics.REPLIES_TO_SYS.labels(ctx.handler).inc()
            if kept is None:
                return ""
            request = kept
        index = sum(p.handler == ctx.handler for p in self.items)
        rid = request_id(ctx.stream, ctx.entry_id, ctx.handler, index)
        self.items.append(Published(id=rid, handler=ctx.handler, request=request, upload=upload))
        return rid


def outputs(
    envelope: EventEnvelope, collected: Outbox, outbox: str, maxlen: int | None, order: str | None
) -> list[Output]:
    """One outbox entry per published request or action, with the event's app and trace id."""
    now = time.time()
    entries = [
        OutboxEntry(
            id=p.id,
            app=envelope.app,
            trace_id=envelope.trace_id,
            created_at=now,
            request=cast(SendRequestType, p.request),
            origin=f"handler:{p.handler}",
            upload=p.upload,
            traceparent=tracing.traceparent(),  # the handler's span: the sender continues it
        )
        for p in collected.items
    ]
    sends = [Output(outbox, {"data": encode_outbox(entry)}, maxlen, order) for entry in entries]
    return sends + action_outputs(envelope, collected.actions, outbox, maxlen, now, order)
