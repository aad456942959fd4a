"""Traces (wecom-bus[otel]): one trace from the ingress's span to the sender's WeCom call.

Everything runs in this process on the real Redis: the ingress app (ASGI), the default
responder router under a Consumer, the sender's OutboxHandler under a Consumer, and the
project's fake WeCom in-process. Spans go to OpenTelemetry's InMemorySpanExporter.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from services.ingress.app import create_app
from services.responder.handlers import router as responder
from services.sender.handler import OutboxHandler
from shared import tracing
from shared.bus import names
from shared.bus.options import ConsumerOptions
from shared.bus.router import State
from shared.bus.worker import Consumer
from shared.schemas.envelope import decode_envelope, decode_outbox
from shared.wecom.client import WeComClient
from shared.wecom.governor import Governor
from shared.wecom.token import TokenCache
from tests import helpers
from tests.helpers import post_callback, text_xml
from tests.inprocess_wecom import SECRET, InProcessWeCom

ROOT = Path(__file__).resolve().parent.parent
WORDS = "launch code 7731 吗?"  # the member's text; the reply is "launch code 7731 !"
REPLY = "launch code 7731 !"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _options() -> ConsumerOptions:
    return ConsumerOptions(start="backlog", block_ms=50, claim_idle=5.0, max_deliveries=2)


async def _ingress(redis: Redis, redis_url: str) -> None:
    app = create_app(helpers.settings(redis_url), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        query, body = post_callback(text_xml(WORDS))
        assert (await client.post(f"/callback?{query}", content=body)).status_code == 200


async def _respond(redis: Redis, redis_url: str) -> None:
    state = State(settings=helpers.settings(redis_url), redis=redis)
    consumer = Consumer(
        redis,
        stream=names.events(),
        group=names.RESPONDER_GROUP,
        handler=responder.handler(state=state),
        options=_options(),
    )
    assert (await consumer.run_burst())["ok"] == 1


@pytest.fixture
async def sender(
    redis: Redis, fake_wecom: InProcessWeCom, spans: InMemorySpanExporter
) -> AsyncIterator[Consumer]:
    """The sender's handler on the fake WeCom; made after tracing is on, as a service does."""
    app = fake_wecom.settings
    cache = lambda fetch: TokenCache(  # noqa: E731
        redis, fetch, corp_id=app.corp_id, agent_id=app.agent_id, name=app.name
    )
    client = WeComClient(
        app, token_source=cache, base_url=fake_wecom.base_url, transport=fake_wecom.transport
    )
    async with client:
        handler = OutboxHandler(
            redis, prefix="wecom", clients={"default": client}, governor=Governor(redis)
        )
        yield Consumer(
            redis,
            stream=names.outbox(),
            group=names.SENDER_GROUP,
            handler=handler,
            options=_options(),
        )


def _one(found: list[ReadableSpan], name: str, group: str | None = None) -> ReadableSpan:
    matching = [
        s
        for s in found
        if s.name == name
        and (group is None or (s.attributes or {}).get("messaging.consumer.group.name") == group)
    ]
    assert len(matching) == 1, [s.name for s in found]
    return matching[0]


def _parent(child: ReadableSpan) -> int:
    assert child.parent is not None, f"{child.name} has no parent"
    return int(child.parent.span_id)


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_one_trace_from_the_ingress_to_the_wecom_call(
    redis: Redis,
    redis_url: str,
    spans: InMemorySpanExporter,
    sender: Consumer,
    fake_wecom: InProcessWeCom,
) -> None:
    await _ingress(redis, redis_url)
    await _respond(redis, redis_url)
    assert (await sender.run_burst())["ok"] == 1
    assert [s.body["text"]["content"] for s in fake_wecom.sends] == [REPLY]

    found = list(spans.get_finished_spans())
    callback = _one(found, "ingress.callback")
    assert callback.parent is None and callback.kind is SpanKind.SERVER
    assert callback.attributes == {"wecom_bus.app": "default", "http.response.status_code": 200}
    for name in ("ingress.verify", "ingress.store"):
        assert _parent(_one(found, name)) == _id(callback)

    deliver = _one(found, "bus.deliver", "responder")
    assert deliver.kind is SpanKind.CONSUMER and _parent(deliver) == _id(callback)
    handler = [s for s in found if s.name == "bus.handler" and _parent(s) == _id(deliver)]
    commit = [s for s in found if s.name == "bus.commit" and _parent(s) == _id(deliver)]
    assert len(handler) == len(commit) == 1

    # The sender continues the trace from the responder's handler span (the outbox entry's).
    send_deliver = _one(found, "bus.deliver", "sender")
    assert _parent(send_deliver) == _id(handler[0])
    [send_handler] = [
        s for s in found if s.name == "bus.handler" and _parent(s) == _id(send_deliver)
    ]
    governor, send = _one(found, "sender.governor"), _one(found, "sender.send")
    assert _parent(governor) == _parent(send) == _id(send_handler)
    assert (send.attributes or {})["wecom_bus.request_id"] == decode_outbox(
        (await _data(redis, names.outbox()))[0]
    ).id

    # The WeCom calls (gettoken, then message/send) are HTTP spans under the send span.
    http = [s for s in found if s.kind is SpanKind.CLIENT and _http_url(s)]
    assert [(s.name, _parent(s)) for s in http] == [("GET", _id(send)), ("POST", _id(send))]
    assert "/cgi-bin/message/send?access_token=***" in _http_url(http[1])  # masked
    assert "corpsecret=***" in _http_url(http[0])
    # Redis commands join the trace where a message caused them (the store's script here).
    store_redis = [s for s in found if _parent_or_0(s) == _id(_one(found, "ingress.store"))]
    assert store_redis and all(s.kind is SpanKind.CLIENT for s in store_redis)

    # One trace: every span exported (background polling included) belongs to it.
    trace_id = callback.context.trace_id if callback.context else 0
    assert {s.context.trace_id for s in found if s.context} == {trace_id}

    # The streams carry the traceparents the spans were continued from.
    event = decode_envelope((await _data(redis, names.events()))[0])
    assert event.traceparent == _traceparent(callback)
    assert event.trace_id == f"{trace_id:032x}"  # the logs' trace_id is the trace's
    entry = decode_outbox((await _data(redis, names.outbox()))[0])
    assert entry.traceparent == _traceparent(handler[0])
    assert entry.trace_id == event.trace_id

    # Names, ids and types only: not the member's text, the reply, a token or a secret.
    token = await redis.get(names.token("wecom", "wwcorp", 1000002))
    assert isinstance(token, bytes)
    secrets = [WORDS, "launch code", REPLY, token.decode(), SECRET, helpers.TOKEN, helpers.AES_KEY]
    for text in _texts(found):
        assert not any(secret in text for secret in secrets), text


async def _data(redis: Redis, stream: str) -> list[bytes]:
    """The ``data`` field of every entry of ``stream``, oldest first."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(stream))
    return [fields[b"data"] for _, fields in entries]


def _traceparent(span: ReadableSpan) -> str:
    """W3C: version 00, trace id, span id, flags (sampled; the SDK also sets "random")."""
    assert span.context is not None
    flags = int(span.context.trace_flags)
    assert flags & 1
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{flags:02x}"


def _http_url(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


def _parent_or_0(span: ReadableSpan) -> int:
    return span.parent.span_id if span.parent else 0


def _texts(found: list[ReadableSpan]) -> Iterator[str]:
    """Every name, attribute value and event of the spans, as text."""
    for s in found:
        yield s.name
        yield json.dumps(dict(s.attributes or {}), ensure_ascii=False)
        for event in s.events:
            yield event.name + json.dumps(dict(event.attributes or {}), ensure_ascii=False)
        yield str(s.status.description or "")


async def test_a_refused_callback_is_a_span_with_its_status(
    redis: Redis, redis_url: str, spans: InMemorySpanExporter
) -> None:
    app = create_app(helpers.settings(redis_url), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        query, body = post_callback(text_xml(WORDS))
        tampered = query.replace("msg_signature=", "msg_signature=0")
        assert (await client.post(f"/callback?{tampered}", content=body)).status_code == 403
    callback = _one(list(spans.get_finished_spans()), "ingress.callback")
    assert (callback.attributes or {})["http.response.status_code"] == 403
    assert await redis.xlen(names.events()) == 0


async def test_a_failing_handler_span_names_the_error_type_only(
    redis: Redis, redis_url: str, spans: InMemorySpanExporter
) -> None:
    from shared.bus import Context, Router
    from shared.schemas.inbound import TextMessage

    failing = Router("failing")

    @failing.on(TextMessage)
    async def boom(msg: TextMessage, ctx: Context) -> None:
        raise ValueError(f"cannot handle {msg.content}")  # quotes the member's text

    await _ingress(redis, redis_url)
    consumer = Consumer(
        redis,
        stream=names.events(),
        group="failing",
        handler=failing.handler(),
        options=ConsumerOptions(start="backlog", block_ms=50, max_deliveries=1),
    )
    assert (await consumer.run_burst())["deadlettered"] == 1
    found = list(spans.get_finished_spans())
    handler = _one(found, "bus.handler")
    assert handler.status.description == "ValueError"
    assert not handler.events  # no exception event: its message has the text
    assert not any("launch code" in text for text in _texts(found))


async def test_logs_in_a_handler_carry_the_entry_trace_id(redis: Redis, redis_url: str) -> None:
    """Tracing off: the handler passes no trace_id; the service's formatter adds the entry's,
    each concurrent delivery its own."""
    from shared.bus import Context, Router
    from shared.logs import JSONFormatter
    from shared.schemas.inbound import TextMessage

    assert not tracing.enabled()
    chatty = Router("chatty")
    log = logging.getLogger("team.chatty")

    @chatty.on(TextMessage)
    async def note(msg: TextMessage, ctx: Context) -> None:
        await asyncio.sleep(0.05)  # both deliveries are in flight at once
        log.warning("handling one")  # no extra: the runtime knows which entry this is

    app = create_app(helpers.settings(redis_url), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        for n in (1, 2):
            query, body = post_callback(text_xml(f"#{n}", msg_id=n), nonce=f"n{n}")
            assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    consumer = Consumer(
        redis,
        stream=names.events(),
        group="chatty",
        handler=chatty.handler(),
        options=ConsumerOptions(start="backlog", block_ms=50),
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # what logs.configure installs, on a buffer
    handler.setFormatter(JSONFormatter("chatty"))
    log.addHandler(handler)
    try:
        assert (await consumer.run_burst())["ok"] == 2
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    entries = [decode_envelope(data) for data in await _data(redis, names.events())]
    assert len(lines) == 2 and {line["trace_id"] for line in lines} == {e.trace_id for e in entries}
    assert all(len(e.trace_id) == 16 and e.traceparent == "" for e in entries)  # tracing off
    assert "trace_id" not in json.loads(JSONFormatter("t").format(_record()))  # outside one


def _record() -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, "idle", None, None)


def test_entries_written_before_traceparent_existed_still_decode() -> None:
    from shared.bus.testing import text_message
    from shared.schemas.envelope import EventEnvelope, encode_envelope, encode_outbox, outbox_entry
    from shared.schemas.outbound import TextSend

    message = text_message("hi")
    event = EventEnvelope(
        app="default", received_at=1.0, trace_id="0" * 16, dedup_key="msg:1", event=message
    )
    request = TextSend.reply_to(message, "hello")
    entry = outbox_entry(
        id="r1", app="default", trace_id="0" * 16, created_at=1.0, request=request, origin="t"
    )
    for encoded, decode in (
        (encode_envelope(event), decode_envelope),
        (encode_outbox(entry), decode_outbox),
    ):
        old = json.loads(encoded)
        assert old.pop("traceparent") == ""
        assert decode(json.dumps(old).encode()).traceparent == ""


def test_tracing_is_opt_in_by_the_standard_variables() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})


def test_only_exporters_this_install_has_are_accepted() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from shared._otel import _exporters
    from shared.errors import ConfigError

    [otlp] = _exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert isinstance(otlp, OTLPSpanExporter)
    for environ, variable in (
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ):
        with pytest.raises(ConfigError) as info:
            _exporters(environ)
        assert info.value.variable == variable


# A service in a subprocess: ingress POST, the responder and the sender on the fake WeCom.
# argv: Redis URL, hide OpenTelemetry ("1": as if wecom-bus[otel] were not installed).
SERVICE = """
import asyncio, json, sys

class NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {name!r}")

if sys.argv[2] == "1":
    sys.meta_path.insert(0, NoOtel())

import httpx
from redis.asyncio import Redis

from services.ingress.app import create_app
from services.responder.handlers import router
from services.sender.handler import OutboxHandler
from shared import tracing
from shared.bus import Router, names
from shared.bus.options import ConsumerOptions
from shared.bus.router import State
from shared.bus.worker import Consumer
from shared.wecom.client import WeComClient
from shared.schemas.inbound import TextMessage
from shared.wecom.governor import Governor
from shared.wecom.token import TokenCache
from tests import helpers
from tests.inprocess_wecom import InProcessWeCom

own = Router("own")

@own.on(TextMessage, stop=False)
async def lookup(msg, ctx):  # a team's handler making a span of its own
    if tracing.enabled():
        from opentelemetry import trace
        with trace.get_tracer("team").start_as_current_span("team.lookup"):
            pass

async def main() -> None:
    url = sys.argv[1]
    on = tracing.setup("ingress")
    redis = Redis.from_url(url)
    app = create_app(helpers.settings(url), redis=redis)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        query, body = helpers.post_callback(helpers.text_xml("你好吗?"))
        status = (await c.post(f"/callback?{query}", content=body)).status_code
    options = ConsumerOptions(start="backlog", block_ms=50)
    state = State(settings=helpers.settings(url), redis=redis)
    handler = Router("top").include(own, router).handler(state=state)
    responded = await Consumer(
        redis, stream=names.events(), group="responder", handler=handler, options=options
    ).run_burst()
    fake = InProcessWeCom()
    app = fake.settings
    cache = lambda fetch: TokenCache(redis, fetch, corp_id=app.corp_id, agent_id=app.agent_id)
    client = WeComClient(app, token_source=cache, base_url=fake.base_url,
                         transport=fake.transport)
    async with client:
        sender = OutboxHandler(redis, prefix="wecom", clients={"default": client},
                               governor=Governor(redis))
        sent = await Consumer(
            redis, stream=names.outbox(), group="sender", handler=sender, options=options
        ).run_burst()
    await fake.aclose()
    await redis.aclose()
    wrapped = hasattr(Redis.execute_command, "__wrapped__")  # instrumented while on
    tracing.shutdown()
    otel = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    mine = ("shared._otel", "opentelemetry.instrumentation", "opentelemetry.exporter")
    ours = [m for m in sys.modules if m.startswith(mine)]
    result = {"on": on, "status": status, "responded": responded["ok"], "sent": sent["ok"],
              "delivered": len(fake.sends), "otel": len(otel), "ours": ours, "wrapped": wrapped}
    print("RESULT " + json.dumps(result))

asyncio.run(main())
"""


def _service(redis_url: str, hide: bool, **otel: str) -> tuple[dict[str, Any], str, str]:
    """Run SERVICE; (its RESULT, its stdout, its stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SERVICE, redis_url, "1" if hide else "0"],
        cwd=ROOT,
        env={**env, **otel},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("hide", "otel"),
    [
        (True, {"OTEL_TRACES_EXPORTER": "console"}),  # asked for, but the extra is missing
        (False, {}),  # installed, not asked for
        (False, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}),
    ],
)
async def test_without_the_extra_or_the_variables_nothing_of_otel_is_imported(
    redis: Redis, redis_url: str, hide: bool, otel: dict[str, str]
) -> None:
    result, _, errors = _service(redis_url, hide, **otel)
    assert result["on"] is False
    assert [result[k] for k in ("status", "responded", "sent", "delivered")] == [200, 1, 1, 1]
    # Nothing of ours: no instrumentation, no exporter, Redis unwrapped. (redis-py 8 itself
    # imports the OpenTelemetry SDK's metrics when it is installed; that is not tracing.)
    assert result["ours"] == [] and result["wrapped"] is False
    if hide:
        assert result["otel"] == 0  # the extra missing: no OpenTelemetry module at all
        assert "wecom-bus[otel] is not installed" in errors


async def test_the_standard_variables_turn_tracing_on(redis: Redis, redis_url: str) -> None:
    result, output, _ = _service(redis_url, False, OTEL_TRACES_EXPORTER="console")
    assert result["on"] is True and result["delivered"] == 1
    assert result["ours"] and result["wrapped"] is True
    found = _console_spans(output)
    names_seen = {s["name"] for s in found}
    assert {"ingress.callback", "bus.deliver", "sender.send", "POST"} <= names_seen
    assert {s["resource"]["attributes"]["service.name"] for s in found} == {"wecom-bus-ingress"}
    # A handler's own span joins the trace, under the runtime's handler span.
    [team] = [s for s in found if s["name"] == "team.lookup"]
    [parent] = [s for s in found if s["context"]["span_id"] == team["parent_id"]]
    assert parent["name"] == "bus.handler"
    assert len({s["context"]["trace_id"] for s in found}) == 1


def _console_spans(output: str) -> list[dict[str, Any]]:
    """The spans OTEL_TRACES_EXPORTER=console printed (JSON objects one after another)."""
    decoder, found, at = json.JSONDecoder(), [], output.find("{")
    while at != -1:
        value, end = decoder.raw_decode(output, at)
        if isinstance(value, dict) and "context" in value:
            found.append(value)
        at = output.find("{", end)
    return found


def test_an_exporter_this_install_lacks_stops_the_start() -> None:
    from shared.errors import ConfigError

    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    with pytest.raises(ConfigError) as info:
        tracing.setup("sender", environ)
    assert info.value.variable == "OTEL_EXPORTER_OTLP_PROTOCOL"
    assert not tracing.enabled()


class _Token:
    """A token source that hands out one fixed token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get(self) -> str:
        return self.token

    async def invalidate(self, failed: str) -> None:
        return None


async def test_a_failed_wecom_call_is_recorded_by_type_not_message(
    spans: InMemorySpanExporter, fake_wecom: InProcessWeCom
) -> None:
    import socket

    from opentelemetry.trace import StatusCode

    from shared.wecom.errors import WeComUnavailableError

    with socket.socket() as probe:  # a loopback port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "tok-5ecret-in-the-url"
    client = WeComClient(
        fake_wecom.settings, token_source=_Token(token), base_url=f"http://127.0.0.1:{port}"
    )
    async with client:
        with tracing.span("test"), pytest.raises(WeComUnavailableError):
            await client.send(b'{"touser":"alice","msgtype":"text","text":{"content":"hi"}}')
    found = list(spans.get_finished_spans())
    [http] = [s for s in found if s.kind is SpanKind.CLIENT]
    assert http.status.status_code is StatusCode.ERROR
    assert http.status.description in ("ConnectError", "ConnectTimeout")
    assert not http.events  # no exception event: no message, no stack trace
    assert _http_url(http).endswith("/cgi-bin/message/send?access_token=***")
    assert not any(token in text for text in _texts(found))


async def test_a_send_wecom_refuses_carries_the_errcode(
    redis: Redis,
    redis_url: str,
    spans: InMemorySpanExporter,
    sender: Consumer,
    fake_wecom: InProcessWeCom,
) -> None:
    from shared.bus.outbox import enqueue

    await fake_wecom.fault(errcode=40003, path="message/send")  # a UserID WeCom does not know
    body = json.dumps({"touser": "alice", "msgtype": "text", "text": {"content": WORDS}})
    await enqueue(redis, helpers.settings(redis_url), body.encode(), origin="test")
    assert (await sender.run_burst())["rejected"] == 1
    found = list(spans.get_finished_spans())
    send = _one(found, "sender.send")
    assert send.status.description == "Reject"  # the type, not "errcode 40003: <advice>"
    assert (send.attributes or {})["wecom.errcode"] == 40003
    assert _one(found, "bus.deliver").parent is None  # an API request starts its own trace
    assert not any("launch code" in text for text in _texts(found))


async def test_an_interim_reply_continues_the_handler_trace(
    redis: Redis, spans: InMemorySpanExporter
) -> None:
    from shared.bus.interim import send_now
    from shared.bus.router import Context
    from shared.bus.testing import text_message
    from shared.schemas.outbound import TextSend

    message = text_message("hi")
    ctx = Context(event=message, entry_id="1-0", stream=names.events(), handler="team.slow")
    with tracing.span("bus.handler"):
        assert await send_now(redis, ctx, TextSend.reply_to(message, "working on it"), label="w")
    [entry] = [decode_outbox(data) for data in await _data(redis, names.outbox())]
    assert entry.traceparent == _traceparent(_one(list(spans.get_finished_spans()), "bus.handler"))
