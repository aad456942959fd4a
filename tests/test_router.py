"""shared.bus.router, pure: matching order, when=, stop/continue, include(), predicates, ids."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence

import pytest

from shared.bus import names
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.router import (
    Context,
    Predicate,
    Router,
    State,
    app,
    event,
    event_key,
    request_id,
    sender,
    text,
)
from shared.config import Settings
from shared.schemas.envelope import EventEnvelope, OutboxEntry, decode_outbox, encode_envelope
from shared.schemas.inbound import (
    ClickEvent,
    Event,
    ImageMessage,
    InboundEvent,
    InboundEventType,
    LocationEvent,
    Message,
    TextMessage,
)
from shared.schemas.outbound import SendRequest, TextSend

BASE = {"to_user": "wwcorp", "from_user": "alice", "create_time": 1700000000, "agent_id": 1}


def msg(content: str, from_user: str = "alice") -> TextMessage:
    return TextMessage(**{**BASE, "from_user": from_user}, msg_id=1, content=content)  # type: ignore[arg-type]


def click(key: str | None) -> ClickEvent:
    return ClickEvent(**BASE, event="click", event_key=key)  # type: ignore[arg-type]


def ctx(ev: InboundEvent, **kw: object) -> Context:
    return Context(event=ev, **kw)  # type: ignore[arg-type]


async def run(router: Router, ev: InboundEvent, **kw: object) -> list[str]:
    """Dispatch and return the reply texts, in order."""
    published = await router.dispatch(ev, ctx(ev, **kw))
    return [p.request.text.content for p in published]  # type: ignore[attr-defined]


def replying(router: Router, label: str, event_type: type[InboundEvent], **on: object) -> None:
    async def handler(ev: InboundEvent, c: Context) -> SendRequest:
        return TextSend.reply_to(ev, label)

    handler.__qualname__ = label  # as if defined at module level under that name
    router.on(event_type, **on)(handler)  # type: ignore[arg-type]


async def test_first_matching_route_wins_and_stops() -> None:
    router = Router("r")
    replying(router, "image", ImageMessage)
    replying(router, "hello", TextMessage, when=text("hello"))
    replying(router, "any-text", TextMessage)
    replying(router, "any-message", Message)

    assert await run(router, msg("hello there")) == ["hello"]
    assert await run(router, msg("bye")) == ["any-text"]
    assert [r.name for r in router.routes] == ["r.image", "r.hello", "r.any-text", "r.any-message"]


async def test_stop_false_lets_later_routes_match_until_one_stops() -> None:
    router = Router("r")
    replying(router, "audit", InboundEvent, stop=False)
    replying(router, "log-text", TextMessage, stop=False)
    replying(router, "answer", TextMessage)
    replying(router, "never", TextMessage)

    assert await run(router, msg("x")) == ["audit", "log-text", "answer"]
    assert await run(router, click("k")) == ["audit"]


async def test_subclasses_match_and_unmatched_events_give_nothing() -> None:
    router = Router("r")
    replying(router, "event", Event)
    assert await run(router, click("k")) == ["event"]
    loc = LocationEvent(**BASE, event="LOCATION", latitude=1.0)  # type: ignore[arg-type]
    assert await run(router, loc) == ["event"]
    assert await run(router, msg("x")) == []


async def test_when_accepts_a_plain_callable_of_event_and_context() -> None:
    router = Router("r")
    replying(router, "long", TextMessage, when=lambda m, c: len(m.content) > 3 and c.delivery == 1)
    assert await run(router, msg("long text")) == ["long"]
    assert await run(router, msg("long text"), delivery=2) == []
    assert await run(router, msg("ab")) == []


async def test_include_keeps_order_and_sees_routes_added_later() -> None:
    help_, echo = Router("help"), Router("echo")
    replying(help_, "help", TextMessage, when=text(r"^/help\b"))
    replying(echo, "echo", TextMessage)
    root = Router("root").include(help_, echo)
    replying(help_, "ping", TextMessage, when=text(r"^/ping$"))  # after include

    assert await run(root, msg("/help me")) == ["help"]
    assert await run(root, msg("/ping")) == ["ping"]
    assert await run(root, msg("hi")) == ["echo"]
    assert [r.name for r in root.routes] == ["help.help", "help.ping", "echo.echo"]


async def test_a_route_added_after_matching_began_is_matched() -> None:
    inner = Router("inner")
    root = Router("root").include(inner)
    replying(root, "echo", TextMessage)
    assert await run(root, msg("/ping")) == ["echo"]  # the flattened routes are now cached
    replying(inner, "ping", TextMessage, when=text(r"^/ping$"))
    assert await run(root, msg("/ping")) == ["ping"]
    assert await run(root, msg("hi")) == ["echo"]


def test_include_refuses_cycles() -> None:
    a, b = Router("a"), Router("b")
    a.include(b)
    with pytest.raises(ValueError, match="cycle"):
        b.include(a)
    with pytest.raises(ValueError, match="cycle"):
        a.include(a)


@pytest.mark.parametrize(
    ("predicate", "ev", "kw", "expected"),
    [
        (text(r"^(报修|repair)"), msg("报修 printer"), {}, True),
        (text(r"^(报修|repair)"), msg("please repair"), {}, False),
        (text("HELLO", re.IGNORECASE), msg("hello"), {}, True),
        (text("x"), click("x"), {}, False),
        (event("click", "view"), click("k"), {}, True),
        (event("CLICK"), click("k"), {}, True),
        (event("view"), click("k"), {}, False),
        (event("click"), msg("click"), {}, False),
        (event_key("menu_1"), click("menu_1"), {}, True),
        (event_key("menu_1"), click("menu_10"), {}, False),
        (event_key(re.compile(r"^menu_\d+$")), click("menu_10"), {}, True),
        (event_key("menu_1"), click(None), {}, False),
        (event_key("menu_1"), msg("menu_1"), {}, False),
        (sender("bob", "alice"), msg("x"), {}, True),
        (sender("bob"), msg("x"), {}, False),
        (app("hr"), msg("x"), {"app": "hr"}, True),
        (app("hr"), msg("x"), {}, False),
        (text("a") & sender("alice"), msg("a"), {}, True),
        (text("a") & sender("bob"), msg("a"), {}, False),
        (text("zzz") | sender("alice"), msg("a"), {}, True),
        (~sender("alice"), msg("a"), {}, False),
        (~(text("a") | app("hr")), msg("b"), {}, True),
    ],
)
def test_predicates(
    predicate: Predicate, ev: InboundEvent, kw: dict[str, object], expected: bool
) -> None:
    assert predicate(ev, ctx(ev, **kw)) is expected


def test_predicates_describe_themselves() -> None:
    assert repr(text("a") & ~app("hr")) == "(text('a') & ~app('hr',))"


async def test_replies_returned_and_published_get_deterministic_ids() -> None:
    router = Router("bot")

    @router.on(TextMessage, stop=False)
    async def many(m: TextMessage, c: Context) -> Sequence[SendRequest]:
        first = c.publish(TextSend.reply_to(m, "published"))
        assert first == request_id("s", c.entry_id, c.handler, 0)
        return [TextSend.reply_to(m, "one"), TextSend.reply_to(m, "two")]

    @router.on(TextMessage)
    async def nothing(m: TextMessage, c: Context) -> None:
        return None

    published = await router.dispatch(msg("x"), ctx(msg("x"), entry_id="5-0", stream="s"))
    again = await router.dispatch(msg("x"), ctx(msg("x"), entry_id="5-0", stream="s", delivery=2))
    other = await router.dispatch(msg("x"), ctx(msg("x"), entry_id="6-0", stream="s"))

    name = f"bot.{many.__qualname__}"
    assert [p.handler for p in published] == [name] * 3
    assert [p.id for p in published] == [request_id("s", "5-0", name, i) for i in range(3)]
    assert [p.id for p in again] == [p.id for p in published]  # a redelivery: the same ids
    assert not {p.id for p in other} & {p.id for p in published}
    assert len({p.id for p in published}) == 3


async def test_one_function_under_two_routes_gets_two_names() -> None:
    router = Router("r")

    async def reply(m: TextMessage, c: Context) -> SendRequest:
        return TextSend.reply_to(m, "x")

    router.on(TextMessage, stop=False)(reply)
    router.on(TextMessage)(reply)
    published = await router.dispatch(msg("x"), ctx(msg("x")))
    assert [p.handler for p in published] == [
        f"r.{reply.__qualname__}",
        f"r.{reply.__qualname__}#2",
    ]
    assert len({p.id for p in published}) == 2


async def test_a_handler_returning_something_else_is_an_error() -> None:
    router = Router("r")

    @router.on(TextMessage)
    async def wrong(m: TextMessage, c: Context) -> SendRequest:
        return "hello"  # type: ignore[return-value]

    with pytest.raises(TypeError, match=r"r\..*wrong returned str"):
        await router.dispatch(msg("x"), ctx(msg("x")))


def envelope_delivery(ev: InboundEventType, entry_id: str = "7-0", count: int = 1) -> Delivery:
    env = EventEnvelope(app="hr", received_at=1.5, trace_id="tr-1", dedup_key="msg:1", event=ev)
    return Delivery(entry_id, names.events("p"), {b"data": encode_envelope(env)}, count)


def outbox_entry(out: Output) -> OutboxEntry:
    data = out.fields["data"]
    assert isinstance(data, bytes)
    return decode_outbox(data)


async def test_worker_handler_turns_replies_into_outbox_outputs() -> None:
    router = Router("bot")

    @router.on(TextMessage, when=app("hr"))
    async def answer(m: TextMessage, c: Context) -> SendRequest:
        assert (c.app, c.trace_id, c.entry_id, c.received_at) == ("hr", "tr-1", "7-0", 1.5)
        return TextSend.reply_to(m, f"got {m.content} on delivery {c.delivery}")

    handle = router.handler("p")
    (out,) = await handle(envelope_delivery(msg("hi")))
    (redelivered,) = await handle(envelope_delivery(msg("hi"), count=2))

    assert out.stream == names.outbox("p")
    entry = outbox_entry(out)
    name = f"bot.{answer.__qualname__}"
    assert entry.id == request_id(names.events("p"), "7-0", name, 0)
    assert (entry.app, entry.trace_id, entry.origin) == ("hr", "tr-1", f"handler:{name}")
    assert entry.request == TextSend.reply_to(msg("hi"), "got hi on delivery 1")
    assert outbox_entry(redelivered).id == entry.id
    assert await handle(envelope_delivery(click("k"))) == []  # unmatched: ack, no output


async def test_worker_handler_rejects_what_is_not_an_envelope() -> None:
    handle = Router("r").handler("p")
    with pytest.raises(Reject, match="no 'data'"):
        await handle(Delivery("1-0", "s", {b"other": b"x"}, 1))
    with pytest.raises(Reject, match="not an event envelope"):
        await handle(Delivery("1-0", "s", {b"data": b"{not json"}, 1))


# ------------------------------------------------------------------ lifecycle and state


async def test_hooks_run_in_include_order_and_shutdown_in_reverse() -> None:
    calls: list[str] = []

    def hook(label: str) -> Callable[[State], Awaitable[None]]:
        async def run(state: State) -> None:
            calls.append(label)

        return run

    top, a, b = Router("top"), Router("a"), Router("b")
    top.on_startup(hook("top-1"))
    top.include(a)
    top.on_startup(hook("top-2"))
    a.on_startup(hook("a"))  # added after the include: still seen, at a's place
    top.include(b)
    b.on_startup(hook("b"))
    for r in (top, a, b):  # flattened order: a-down, b-down (included earlier), top-down
        r.on_shutdown(hook(f"{r.name}-down"))

    await top.startup(State())
    assert calls == ["top-1", "a", "top-2", "b"]
    calls.clear()
    await top.shutdown(State())
    assert calls == ["top-down", "b-down", "a-down"]


async def test_a_failing_shutdown_hook_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router, done = Router("r"), []

    @router.on_shutdown
    async def closes(state: State) -> None:
        done.append("closed")

    @router.on_shutdown
    async def breaks(state: State) -> None:
        raise RuntimeError("boom")

    await router.shutdown(State())
    assert done == ["closed"]
    assert any(r.message == "shutdown hook failed" for r in caplog.records)


async def test_a_failing_startup_hook_stops_the_start() -> None:
    router, later = Router("r"), []

    @router.on_startup
    async def fails(state: State) -> None:
        raise ValueError("no model configured")

    @router.on_startup
    async def after(state: State) -> None:
        later.append(1)

    with pytest.raises(ValueError, match="no model configured"):
        await router.startup(State())
    assert later == []


async def test_handlers_see_what_startup_hooks_put_on_the_state() -> None:
    router = Router("r")

    @router.on_startup
    async def open_client(state: State) -> None:
        state.greeting = state.environ["GREETING"] + " " + state.settings.prefix

    @router.on(TextMessage)
    async def greet(m: TextMessage, c: Context) -> TextSend:
        return TextSend.reply_to(m, c.state.greeting)

    state = State(settings=Settings(prefix="p"), environ={"GREETING": "你好"})
    await router.startup(state)
    handle = router.handler("p", state=state)
    envelope = EventEnvelope(
        app="default", received_at=1.0, trace_id="t", dedup_key="k", event=msg("hi")
    )
    [out] = await handle(Delivery("1-0", "p:events", {b"data": encode_envelope(envelope)}, 1))
    data = out.fields["data"]
    assert isinstance(data, bytes)
    assert decode_outbox(data).request.text.content == "你好 p"  # type: ignore[union-attr]


def test_state_says_what_is_missing_and_never_shows_values() -> None:
    state = State(environ={"SECRET": "hunter2"})
    with pytest.raises(AttributeError, match="'client': no startup hook set it"):
        state.client  # noqa: B018
    with pytest.raises(RuntimeError, match="no Redis client"):
        state.redis  # noqa: B018
    state.client = "hunter2"
    assert "hunter2" not in repr(state) and "client" in repr(state)


# ------------------------------------------------------------------ system events


def sys_event() -> ClickEvent:
    return ClickEvent(**{**BASE, "from_user": "sys"}, event="change_contact")  # type: ignore[arg-type]


async def test_a_reply_to_a_sys_event_is_never_sent_to_sys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router("r")

    @router.on(Event)
    async def answer_everything(ev: Event, c: Context) -> list[SendRequest]:
        return [TextSend.reply_to(ev, "收到"), TextSend.to(["sys", "admin"], "通讯录变更")]

    ev = sys_event()
    published = await router.dispatch(ev, ctx(ev))
    assert [p.request.touser for p in published] == ["admin"]  # "sys" left out, never sent to
    assert sum("addressed to 'sys'" in r.getMessage() for r in caplog.records) == 2


async def test_a_member_may_still_be_answered_and_a_sys_event_may_notify_others() -> None:
    router = Router("r")

    @router.on(InboundEvent)
    async def reply(ev: InboundEvent, c: Context) -> SendRequest:
        return TextSend.reply_to(ev, "ok")

    assert [p.request.touser for p in await router.dispatch(msg("x"), ctx(msg("x")))] == ["alice"]
    member_sys = msg("x", from_user="sysadmin")
    assert [p.request.touser for p in await router.dispatch(member_sys, ctx(member_sys))] == [
        "sysadmin"
    ]


def test_a_handler_context_is_the_event_context_with_its_name() -> None:
    state = State()
    ctx = Context(
        event=msg("hi"),
        app="a",
        entry_id="5-1",
        stream="s",
        trace_id="t",
        delivery=2,
        max_deliveries=3,
        received_at=1.5,
        state=state,
    )
    run = ctx.running("r.h")
    assert run == dataclasses.replace(ctx, handler="r.h")
    # What the handlers of one event share: its state and the outbox they all publish to.
    assert run.state is state and run._outbox is ctx._outbox and run._bot is ctx._bot
