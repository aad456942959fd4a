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

Lifecycle: ``@router.on_startup`` and ``@router.on_shutdown`` register ``async def hook(state)``.
The service runs every startup hook (included routers' too, in include order) before it reads
the first event, and the shutdown hooks (in reverse order) after draining. ``State`` carries the
settings, the Redis client and the environment, and whatever a startup hook sets on it (an HTTP
client, a loaded rules file); handlers see it as ``ctx.state``. So nothing needs configuration
at import time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, Generic, TypeAlias, TypeVar

import msgspec

from shared.aibot.answer import BotAnswer, is_bot_entry, read_bot_entry
from shared.bus import names
from shared.bus.actions import Action, Item
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.delivery import Handler as WorkerHandler
from shared.bus.directory import Directory
from shared.bus.ordering import order_of
from shared.bus.predicates import Predicate, app, event, event_key, sender, text
from shared.bus.publishing import Outbox, Published, outputs, request_id
from shared.bus.state import State
from shared.logs import TRACE_ID
from shared.schemas.envelope import decode_envelope
from shared.schemas.inbound import InboundEvent
from shared.schemas.outbound import Attachment, SendRequest
from shared.wecom.gateway import WeComGateway, gateway_of

__all__ = [
    "Context",
    "Handler",
    "Hook",
    "Predicate",
    "Published",
    "Reply",
    "Route",
    "Router",
    "State",
    "app",
    "event",
    "event_key",
    "request_id",
    "sender",
    "text",
]

log = logging.getLogger("wecom_bus.router")

E = TypeVar("E", bound=InboundEvent)
Reply: TypeAlias = Item | Sequence[Item] | None
Handler: TypeAlias = Callable[[E, "Context"], Awaitable[Reply]]
Hook: TypeAlias = Callable[["State"], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a handler (and a predicate) knows besides the event."""

    event: InboundEvent = dataclasses.field(repr=False)  # its text is the user's: not in reprs
    app: str = "default"  # the app of the apps file the event came to
    entry_id: str = "0-0"  # the event's stream entry id
    stream: str = ""  # the stream it was read from
    trace_id: str = ""  # carried into the outbox entry and logs
    delivery: int = 1  # 1 on the first attempt
    max_deliveries: int = 0  # the consumer's BUS_MAX_DELIVERIES (0: not known, e.g. a test)
    received_at: float = 0.0  # unix time the ingress accepted the callback
    handler: str = ""  # the running handler's name; "" while routes are matched
    state: State = dataclasses.field(default_factory=State, repr=False, compare=False)
    _outbox: Outbox = dataclasses.field(default_factory=Outbox, repr=False, compare=False)
    _bot: BotAnswer | None = dataclasses.field(default=None, repr=False, compare=False)

    def running(self, handler: str) -> Context:
        """This context for ``handler`` (``dataclasses.replace`` costs twice as much)."""
        run = object.__new__(Context)
        for name in _CONTEXT_FIELDS:
            object.__setattr__(run, name, getattr(self, name))
        object.__setattr__(run, "handler", handler)
        return run

    def publish(self, request: Item) -> str:
        """Queue ``request`` to be sent (or an attachment, or an outbox action); returns its id.

        It reaches the outbox with the event's ack, only if every matched handler succeeds.
        A reply to a system event (FromUserName "sys") is never sent to "sys": that recipient
        is left out, and a request with no other recipient is dropped (logged; id "").
        """
        return self._outbox.add(self, request)

    @property
    def published(self) -> list[Published]:
        """Every request queued so far by this event's handlers, in order."""
        return list(self._outbox.items)

    @property
    def last_delivery(self) -> bool:
        """True on the consumer's last delivery: failing now dead-letters the event.

        A handler that would ``Retry`` (a busy upstream) can answer politely instead.
        """
        return 0 < self.max_deliveries <= self.delivery

    @property
    def wecom(self) -> WeComGateway:
        """WeCom's APIs through the sender's gateway, as this event's app (shared.wecom.gateway)."""
        return gateway_of(self.state, self.app)

    @property
    def directory(self) -> Directory:
        """Members and departments from the Redis copy (shared.bus.directory)."""
        return Directory(self.state.redis, self.state.settings.prefix, self.app, lambda: self.wecom)

    @property
    def bot_stream(self) -> BotAnswer:
        """The stream answering this AI-bot message (shared.aibot.answer); else RuntimeError."""
        if self._bot is None:
            raise RuntimeError(f"{self.handler}: bot_stream is only for AI-bot messages")
        return self._bot


_CONTEXT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Context))


@dataclasses.dataclass(frozen=True, slots=True)
class Route(Generic[E]):
    event_type: type[E]
    when: Predicate | None
    handler: Handler[E]
    name: str
    stop: bool
    description: str = ""  # what the route does, in the members' words (shown by /help)

    def matches(self, event: InboundEvent, ctx: Context) -> bool:
        return isinstance(event, self.event_type) and (self.when is None or self.when(event, ctx))


class Router:
    """An ordered list of routes and included routers; see the module docstring."""

    _changes = 0  # routes or routers added to any router: a router's flattened list is stale

    def __init__(self, name: str) -> None:
        if not name or any(c in name for c in "\x00 "):
            raise ValueError(f"bad router name {name!r}")
        self.name = name
        self._items: list[Route[Any] | Router] = []
        self._names: set[str] = set()
        self._startup: list[Hook | Router] = []
        self._shutdown: list[Hook | Router] = []
        self._flat_routes: list[Route[Any]] = []
        self._flat_at = -1  # the value of _changes _flat_routes was made at

    def on(
        self,
        event_type: type[E],
        *,
        when: Predicate | Callable[[E, Context], bool] | None = None,
        stop: bool = True,
        description: str | None = None,
    ) -> Callable[[Handler[E]], Handler[E]]:
        """Register a handler for events of ``event_type`` (and subclasses) matching ``when``.

        ``description`` says what it does for a member (``/help`` lists it); by default the
        first line of the handler's docstring, "" when it has none.
        """
        predicate = when if isinstance(when, Predicate) or when is None else Predicate(when)

        def register(fn: Handler[E]) -> Handler[E]:
            name = f"{self.name}.{getattr(fn, '__qualname__', repr(fn))}"
            base, n = name, 1
            while name in self._names:  # one function under two routes: keep their ids apart
                n += 1
                name = f"{base}#{n}"
            self._names.add(name)
            doc = (fn.__doc__ or "").strip().splitlines()
            about = description if description is not None else (doc[0] if doc else "")
            self._items.append(Route(event_type, predicate, fn, name, stop, about))
            Router._changes += 1
            return fn

        return register

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``await hook(state)`` when the service starts, before the first event."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``await hook(state)`` when the service stops, after in-flight work drained."""
        self._shutdown.append(hook)
        return hook

    def _hooks(self, kind: str) -> list[Hook]:
        out: list[Hook] = []
        for item in self._startup if kind == "startup" else self._shutdown:
            out.extend(item._hooks(kind) if isinstance(item, Router) else [item])
        return out

    async def startup(self, state: State) -> None:
        """Run every startup hook, included routers' too, in registration/include order.

        An exception stops the start (the service exits); later hooks do not run.
        """
        for hook in self._hooks("startup"):
            await hook(state)

    async def shutdown(self, state: State) -> None:
        """Run every shutdown hook in reverse order; one failing is logged, the rest still run."""
        for hook in reversed(self._hooks("shutdown")):
            try:
                await hook(state)
            except Exception as exc:
                name = getattr(hook, "__qualname__", repr(hook))
                log.error("shutdown hook failed", exc_info=exc, extra={"hook": name})

    def include(self, *routers: Router) -> Router:
        """Append routers here, in order; routes they gain later are seen too. Returns self."""
        for router in routers:
            if router is self or self in router._walk():
                raise ValueError(f"including {router.name!r} in {self.name!r} makes a cycle")
            self._items.append(router)
            Router._changes += 1
            self._startup.append(router)
            self._shutdown.append(router)
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

    def _flat(self) -> list[Route[Any]]:
        """``routes``, flattened again only after a route or router was added anywhere."""
        if self._flat_at != Router._changes:
            self._flat_routes, self._flat_at = self.routes, Router._changes
        return self._flat_routes

    def match(self, event: InboundEvent, ctx: Context) -> list[Route[Any]]:
        matched: list[Route[Any]] = []
        for route in self._flat():
            if route.matches(event, ctx):
                matched.append(route)
                if route.stop:
                    break
        return matched

    async def dispatch(self, event: InboundEvent, ctx: Context) -> list[Published]:
        """Run the matching handlers in order; returns every request they made."""
        for route in self.match(event, ctx):
            run_ctx = ctx.running(route.name)
            reply = await route.handler(event, run_ctx)
            if isinstance(reply, SendRequest | Attachment | Action):
                run_ctx.publish(reply)
            elif isinstance(reply, Sequence) and not isinstance(reply, str):
                for request in reply:
                    run_ctx.publish(request)
            elif reply is not None:
                raise TypeError(f"{route.name} returned {type(reply).__name__}, not a SendRequest")
        return ctx.published

    def handler(
        self,
        prefix: str = names.DEFAULT_PREFIX,
        *,
        maxlen: int | None = None,
        state: State | None = None,
        max_deliveries: int = 0,
    ) -> WorkerHandler:
        """The worker handler: decode the EventEnvelope, dispatch, return outbox outputs.

        ``maxlen`` trims the outbox (None: the consumer's maxlen). ``state`` is what handlers
        see as ``ctx.state`` (run :meth:`startup` on it first). ``max_deliveries``: the
        consumer's limit, told to handlers as ``ctx.max_deliveries``/``ctx.last_delivery``.
        An entry that is not an EventEnvelope is rejected (dead letter).
        """
        shared = state if state is not None else State()

        async def handle(delivery: Delivery) -> Sequence[Output]:
            data = delivery.fields.get(b"data")
            if data is None:
                raise Reject("entry has no 'data' field")
            try:
                envelope = decode_envelope(data)
                event: InboundEvent = envelope.event
                bot = None
                if is_bot_entry(envelope.app):  # an AI-bot callback (shared.aibot)
                    part = names.partition_of(delivery.stream, prefix)  # its stream's
                    bot_envelope, bot = read_bot_entry(data, lambda: shared.redis, part)
                    event = bot_envelope.event
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise Reject(f"not an event envelope: {exc}") from None
            TRACE_ID.set(envelope.trace_id)  # this delivery's task: its logs carry it
            ctx = Context(
                event=event,
                app=envelope.app,
                entry_id=delivery.entry_id,
                stream=delivery.stream,
                trace_id=envelope.trace_id,
                delivery=delivery.delivery_count,
                max_deliveries=max_deliveries,
                received_at=envelope.received_at,
                state=shared,
                _bot=bot,
            )
            published = await self.dispatch(event, ctx)
            log.debug(
                "dispatched" if published else "no reply",
                extra={
                    "trace_id": envelope.trace_id,
                    "entry_id": delivery.entry_id,
                    "requests": len(published),
                },
            )
            outbox = names.outbox(names.partition_of(delivery.stream, prefix))  # input's part.
            order = order_of(delivery.fields)  # a member's replies keep their order there
            return outputs(envelope, ctx._outbox, outbox, maxlen, order[0] if order else None)

        return handle
