"""The consumer API: a ``Router`` of async handlers for inbound WeCom events.

A behaviour is a module with a router; it knows nothing of Redis::

    router = Router("helpdesk")

    @router.on(TextMessage, when=text(r"^(报修|repair)") & app("default"))
    async def open_ticket(msg: TextMessage, ctx: Context) -> SendRequest | None:
        return TextSend.reply_to(msg, "工单已创建")

Routes are tried in order (an included router's routes sit where it was included). A matching
route with ``stop=True`` (the default, WxJava's ``end()``) ends the matching; ``stop=False``
(``next()``) lets later routes match too. Predicates see the event and the ``Context`` (so they
can test the app) and combine with ``&``, ``|`` and ``~``.

Handlers return a ``SendRequest``, a sequence of them, or None, and may also call
``ctx.publish(request)``. Nothing is sent while the handler runs: every request becomes an
outbox entry written in the same atomic step as the ack of the event, so an event is either
answered and acknowledged, or neither. Each request's id is derived from the event's entry id,
the handler's name and its position, so a redelivered event yields the same ids and the sender
sends each once. Handler names are ``<router name>.<function qualname>``; renaming one changes
its ids, which matters only for events in flight during the deploy.

Handlers steer delivery by raising ``Retry(defer=…)`` or ``Reject(reason)`` (shared.bus.worker).
An event no route matches is acknowledged with no output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeAlias, TypeVar, cast

import msgspec

from shared.bus import names
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.delivery import Handler as WorkerHandler
from shared.schemas.envelope import OutboxEntry, decode_envelope, encode_outbox
from shared.schemas.inbound import Event, InboundEvent, TextMessage
from shared.schemas.outbound import SendRequest, SendRequestType

__all__ = [
    "Context",
    "Handler",
    "Predicate",
    "Published",
    "Reply",
    "Route",
    "Router",
    "app",
    "event",
    "event_key",
    "request_id",
    "sender",
    "text",
]

log = logging.getLogger("wecom_bus.router")

E = TypeVar("E", bound=InboundEvent)
Reply: TypeAlias = SendRequest | Sequence[SendRequest] | None
Handler: TypeAlias = Callable[[E, "Context"], Awaitable[Reply]]


def request_id(stream: str, entry_id: str, handler: str, index: int) -> str:
    """The outbox id of the ``index``-th request ``handler`` made for one event entry."""
    key = f"{stream}\x00{entry_id}\x00{handler}\x00{index}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


class Published(msgspec.Struct, frozen=True, kw_only=True):
    """A send request made while handling one event, with its deterministic id."""

    id: str
    handler: str
    request: SendRequest


class _Outbox:
    """Collects the requests of one dispatch; shared by the contexts of its handlers."""

    def __init__(self) -> None:
        self.items: list[Published] = []

    def add(self, ctx: Context, request: SendRequest) -> str:
        if not isinstance(request, SendRequest):
            raise TypeError(f"{ctx.handler}: expected a SendRequest, got {type(request).__name__}")
        index = sum(p.handler == ctx.handler for p in self.items)
        rid = request_id(ctx.stream, ctx.entry_id, ctx.handler, index)
        self.items.append(Published(id=rid, handler=ctx.handler, request=request))
        return rid


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a handler (and a predicate) knows besides the event."""

    event: InboundEvent = dataclasses.field(repr=False)  # its text is the user's: not in reprs
    app: str = "default"  # the app of the apps file the event came to
    entry_id: str = "0-0"  # the event's stream entry id
    stream: str = ""  # the stream it was read from
    trace_id: str = ""  # carried into the outbox entry and logs
    delivery: int = 1  # 1 on the first attempt
    received_at: float = 0.0  # unix time the ingress accepted the callback
    handler: str = ""  # the running handler's name; "" while routes are matched
    _outbox: _Outbox = dataclasses.field(default_factory=_Outbox, repr=False, compare=False)

    def publish(self, request: SendRequest) -> str:
        """Queue ``request`` to be sent; returns its id.

        It reaches the outbox with the event's ack, only if every matched handler succeeds.
        """
        return self._outbox.add(self, request)

    @property
    def published(self) -> list[Published]:
        """Every request queued so far by this event's handlers, in order."""
        return list(self._outbox.items)


class Predicate:
    """A condition on ``(event, ctx)``; combine with ``&``, ``|``, ``~``."""

    __slots__ = ("_fn", "_label")

    def __init__(self, fn: Callable[[Any, Context], bool], label: str = "") -> None:
        self._fn = fn
        self._label = label or getattr(fn, "__qualname__", "predicate")

    def __call__(self, event: InboundEvent, ctx: Context) -> bool:
        return bool(self._fn(event, ctx))

    def __and__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e, c: self(e, c) and other(e, c), f"({self} & {other})")

    def __or__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e, c: self(e, c) or other(e, c), f"({self} | {other})")

    def __invert__(self) -> Predicate:
        return Predicate(lambda e, c: not self(e, c), f"~{self}")

    def __repr__(self) -> str:
        return self._label


def text(pattern: str | re.Pattern[str], flags: int = 0) -> Predicate:
    """A text message whose content contains a match of ``pattern`` (``re.search``)."""
    rx = re.compile(pattern, flags)
    return Predicate(
        lambda e, _: isinstance(e, TextMessage) and rx.search(e.content) is not None,
        f"text({rx.pattern!r})",
    )


def event(*names_: str) -> Predicate:
    """An event whose Event is one of ``names_`` (case-insensitive: WeCom mixes "LOCATION")."""
    wanted = {n.casefold() for n in names_}
    return Predicate(
        lambda e, _: isinstance(e, Event) and e.event.casefold() in wanted,
        f"event{names_!r}",
    )


def event_key(key: str | re.Pattern[str]) -> Predicate:
    """An event whose EventKey equals ``key``, or contains a match of a compiled pattern."""

    def check(e: InboundEvent, _: Context) -> bool:
        value = e.event_key if isinstance(e, Event) else None
        if value is None:
            return False
        return value == key if isinstance(key, str) else key.search(value) is not None

    label = key if isinstance(key, str) else key.pattern
    return Predicate(check, f"event_key({label!r})")


def sender(*user_ids: str) -> Predicate:
    """Sent by one of these members (FromUserName)."""
    wanted = frozenset(user_ids)
    return Predicate(lambda e, _: e.from_user in wanted, f"sender{user_ids!r}")


def app(*app_names: str) -> Predicate:
    """Received by one of these apps (names of the apps file; "default" otherwise)."""
    wanted = frozenset(app_names)
    return Predicate(lambda _, c: c.app in wanted, f"app{app_names!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Route(Generic[E]):
    event_type: type[E]
    when: Predicate | None
    handler: Handler[E]
    name: str
    stop: bool

    def matches(self, event: InboundEvent, ctx: Context) -> bool:
        return isinstance(event, self.event_type) and (self.when is None or self.when(event, ctx))


class Router:
    """An ordered list of routes and included routers; see the module docstring."""

    def __init__(self, name: str) -> None:
        if not name or any(c in name for c in "\x00 "):
            raise ValueError(f"bad router name {name!r}")
        self.name = name
        self._items: list[Route[Any] | Router] = []
        self._names: set[str] = set()

    def on(
        self,
        event_type: type[E],
        *,
        when: Predicate | Callable[[E, Context], bool] | None = None,
        stop: bool = True,
    ) -> Callable[[Handler[E]], Handler[E]]:
        """Register a handler for events of ``event_type`` (and subclasses) matching ``when``."""
        predicate = when if isinstance(when, Predicate) or when is None else Predicate(when)

        def register(fn: Handler[E]) -> Handler[E]:
            name = f"{self.name}.{getattr(fn, '__qualname__', repr(fn))}"
            base, n = name, 1
            while name in self._names:  # one function under two routes: keep their ids apart
                n += 1
                name = f"{base}#{n}"
            self._names.add(name)
            self._items.append(Route(event_type, predicate, fn, name, stop))
            return fn

        return register

    def include(self, *routers: Router) -> Router:
        """Append routers here, in order; routes they gain later are seen too. Returns self."""
        for router in routers:
            if router is self or self in router._walk():
                raise ValueError(f"including {router.name!r} in {self.name!r} makes a cycle")
            self._items.append(router)
        return self

    def _walk(self) -> Iterator[Router]:
        for item in self._items:
            if isinstance(item, Router):
                yield item
                yield from item._walk()

    @property
    def routes(self) -> list[Route[Any]]:
        """Every route, flattened, in matching order."""
        out: list[Route[Any]] = []
        for item in self._items:
            out.extend(item.routes if isinstance(item, Router) else [item])
        return out

    def match(self, event: InboundEvent, ctx: Context) -> list[Route[Any]]:
        matched: list[Route[Any]] = []
        for route in self.routes:
            if route.matches(event, ctx):
                matched.append(route)
                if route.stop:
                    break
        return matched

    async def dispatch(self, event: InboundEvent, ctx: Context) -> list[Published]:
        """Run the matching handlers in order; returns every request they made."""
        for route in self.match(event, ctx):
            run_ctx = dataclasses.replace(ctx, handler=route.name)
            reply = await route.handler(event, run_ctx)
            if isinstance(reply, SendRequest):
                run_ctx.publish(reply)
            elif isinstance(reply, Sequence) and not isinstance(reply, str):
                for request in reply:
                    run_ctx.publish(request)
            elif reply is not None:
                raise TypeError(f"{route.name} returned {type(reply).__name__}, not a SendRequest")
        return ctx.published

    def handler(
        self, prefix: str = names.DEFAULT_PREFIX, *, maxlen: int | None = None
    ) -> WorkerHandler:
        """The worker handler: decode the EventEnvelope, dispatch, return outbox outputs.

        ``maxlen`` trims the outbox (None: the consumer's maxlen). An entry that is not an
        EventEnvelope is rejected (dead letter).
        """
        outbox = names.outbox(prefix)

        async def handle(delivery: Delivery) -> Sequence[Output]:
            data = delivery.fields.get(b"data")
            if data is None:
                raise Reject("entry has no 'data' field")
            try:
                envelope = decode_envelope(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise Reject(f"not an event envelope: {exc}") from None
            ctx = Context(
                event=envelope.event,
                app=envelope.app,
                entry_id=delivery.entry_id,
                stream=delivery.stream,
                trace_id=envelope.trace_id,
                delivery=delivery.delivery_count,
                received_at=envelope.received_at,
            )
            published = await self.dispatch(envelope.event, ctx)
            log.debug(
                "dispatched" if published else "no reply",
                extra={
                    "trace_id": envelope.trace_id,
                    "entry_id": delivery.entry_id,
                    "requests": len(published),
                },
            )
            now = time.time()
            return [
                Output(
                    outbox,
                    {
                        "data": encode_outbox(
                            OutboxEntry(
                                id=p.id,
                                app=envelope.app,
                                trace_id=envelope.trace_id,
                                created_at=now,
                                request=cast(SendRequestType, p.request),
                                origin=f"handler:{p.handler}",
                            )
                        )
                    },
                    maxlen,
                )
                for p in published
            ]

        return handle
