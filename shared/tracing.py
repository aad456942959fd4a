"""Traces: OpenTelemetry spans across ingress → consumer → sender → WeCom, when asked for.

Optional twice over: OpenTelemetry is imported (``shared._otel``) only when the
``wecom-bus[otel]`` extra is installed *and* the standard ``OTEL_*`` variables ask for traces
(``setup``). Otherwise every helper here is a no-op costing a function call, which matters on
the ingress hot path (``python -m bench.tracing`` measures it).

One trace follows a message: the ingress's ``ingress.callback`` span puts its W3C
``traceparent`` in the ``EventEnvelope``; the consumer runtime continues it (``bus.deliver``,
then ``bus.handler`` and ``bus.commit``); the router copies the handler span's traceparent into
each ``OutboxEntry``; the sender continues that (``sender.governor``, ``sender.send``) down to
the HTTP call to WeCom (httpx instrumentation) and the Redis commands (redis instrumentation).

Span attributes name things (app, stream, group, entry and request ids, message type, errcode),
never contents: no message text, no recipients, no token (URLs are scrubbed), and a failure is
recorded by its exception type only, because a handler's exception may quote the user's text.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace.export import SpanExporter

    from shared._otel import Tracing
    from shared.bus.delivery import Delivery

__all__ = [
    "SpanLike",
    "enabled",
    "ids",
    "instrument_http",
    "setup",
    "shutdown",
    "span",
    "traced_delivery",
    "traceparent",
]

log = logging.getLogger("wecom_bus.tracing")

T = TypeVar("T")
Kind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | int | float | bool

_on: Tracing | None = None  # set by setup() when tracing is on: the one switch


class SpanLike(Protocol):
    """What call sites may do with the span they are in (an OpenTelemetry span fits)."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class _NoSpan:
    """The span when tracing is off: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None


_NOOP = _NoSpan()


class _Carried(msgspec.Struct):
    """The trace field of an EventEnvelope or an OutboxEntry (both name it so)."""

    traceparent: str = ""


_carried = msgspec.json.Decoder(_Carried).decode


def enabled() -> bool:
    return _on is not None


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: Kind = "internal",
    parent: str = "",
) -> contextlib.AbstractContextManager[SpanLike]:
    """A span around a ``with`` block: child of the current span, or of ``parent`` (a
    traceparent). An exception leaving the block marks it failed, by the exception's type."""
    if _on is None:
        return _NOOP
    return _on.span(name, attributes or {}, kind, parent)


def ids() -> tuple[str, str]:
    """``(trace_id, traceparent)`` for a new entry: the current span's while tracing, else a
    random 16-hex id (for the logs) and no traceparent."""
    if _on is not None and (context := _on.current()) is not None:
        return format(context.trace_id, "032x"), _on.traceparent(context)
    return os.urandom(8).hex(), ""


def traceparent() -> str:
    """The W3C traceparent of the current span; "" when there is none or tracing is off."""
    if _on is None or (context := _on.current()) is None:
        return ""
    return _on.traceparent(context)


def traced_delivery(
    work: Coroutine[Any, Any, T], delivery: Delivery, group: str
) -> Coroutine[Any, Any, T]:
    """``work`` (processing one delivery) inside a ``bus.deliver`` span that continues the
    trace its entry carries; ``work`` itself when tracing is off (nothing decoded or added)."""
    if _on is None:
        return work
    try:
        parent = _carried(delivery.fields.get(b"data", b"{}")).traceparent
    except msgspec.MsgspecError:  # not for us to judge: the handler rejects it
        parent = ""
    attributes = {
        "messaging.system": "redis",
        "messaging.destination.name": delivery.stream,
        "messaging.consumer.group.name": group,
        "messaging.message.id": delivery.entry_id,
        "wecom_bus.delivery": delivery.delivery_count,
    }
    return _on.deliver(work, parent, attributes)


def instrument_http(client: httpx.AsyncClient) -> None:
    """Trace ``client``'s requests (a WeComClient's), their URLs without secrets."""
    if _on is not None:
        _on.instrument_http(client)


def wanted(environ: Mapping[str, str]) -> bool:
    """Traces are opt-in: OTEL_TRACES_EXPORTER names one (not "none"), or an OTLP endpoint is
    set; OTEL_SDK_DISABLED=true wins over both."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(environ.get(name) for name in endpoints)


def setup(
    service: str,
    environ: Mapping[str, str] | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on when configured and installed; True when on. Call once at start, before
    the Redis and WeCom clients are made. ``exporter`` (tests): every span goes to it at once,
    whatever the environment says. Raises ConfigError for an exporter that is not available."""
    global _on
    environ = os.environ if environ is None else environ
    if _on is not None or (exporter is None and not wanted(environ)):
        return _on is not None
    try:
        from shared._otel import Tracing
    except ImportError as exc:
        log.warning(
            "OTEL_* asks for traces, but wecom-bus[otel] is not installed: no traces",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return False
    _on = Tracing(service, environ, exporter)
    log.info("tracing on", extra={"sampler": _on.provider.sampler.get_description()})
    return True


def shutdown() -> None:
    """Export what is left and turn tracing off (tests; at exit the provider flushes itself)."""
    global _on
    if _on is not None:
        _on.close()
    _on = None
