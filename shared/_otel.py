"""The OpenTelemetry side of ``shared.tracing``: imported only once tracing is turned on.

Everything that names an OpenTelemetry module lives here, so that a service without the
``wecom-bus[otel]`` extra never imports one (``shared.tracing`` imports this lazily).
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, RequestInfo
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from shared.errors import ConfigError
from shared.wecom.errors import scrub

__all__ = ["Tracing"]

T = TypeVar("T")
_propagator = TraceContextTextMapPropagator()


class InTraceOnly(Sampler):
    """The configured sampler, minus client spans that start a trace of their own: the Redis
    and HTTP calls of background loops (blocking reads, lease renewals, housekeeping) would
    otherwise be a trace each, several a second, saying nothing about any message."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"InTraceOnly{{{self.inner.get_description()}}}"


class TypeOnly(trace.Tracer):
    """A tracer whose spans record a failure by the exception's type only: no exception event,
    no message, no stack trace. The message may hold a member's words (a handler's error) or
    a URL with its token (a transport error); the instrumentations' spans go through it too."""

    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        """Passed through: the instrumentations and ``Tracing`` use start_as_current_span."""
        return self.inner.start_span(*args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        with self.inner.start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=end_on_exit,
        ) as current:
            try:
                yield current
            except BaseException as exc:
                if set_status_on_exception and current.is_recording():
                    current.set_status(StatusCode.ERROR, type(exc).__name__)
                raise


class TypeOnlyProvider(trace.TracerProvider):
    """Hands the instrumentations ``TypeOnly`` tracers of the real provider."""

    def __init__(self, inner: TracerProvider) -> None:
        self.inner = inner

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        tracer = self.inner.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return TypeOnly(tracer)


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """What OTEL_TRACES_EXPORTER names (default otlp); ConfigError for what is not here."""
    out: list[SpanExporter] = []
    for name in [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]:
        if name == "console":
            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
                protocol = environ.get(variable, "").strip()
                if protocol and protocol != "http/protobuf":
                    raise ConfigError(variable, f"{protocol!r}: only http/protobuf is supported")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(OTLPSpanExporter())  # reads OTEL_EXPORTER_OTLP_* itself
        else:
            raise ConfigError("OTEL_TRACES_EXPORTER", f"{name!r}: use otlp, console or none")
    return out


def _resource(service: str) -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES when set, else wecom-bus-<service>."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        return Resource.create({"service.name": f"wecom-bus-{service}"})
    return detected


class Tracing:
    """Tracing turned on: the provider, its tracer, and what ``shared.tracing`` delegates."""

    def __init__(
        self, service: str, environ: Mapping[str, str], exporter: SpanExporter | None
    ) -> None:
        self.provider = TracerProvider(resource=_resource(service))
        self.provider.sampler = InTraceOnly(self.provider.sampler)  # before any tracer exists
        if exporter is not None:  # tests: every span at once, in order
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            for each in _exporters(environ):
                self.provider.add_span_processor(BatchSpanProcessor(each))
            trace.set_tracer_provider(self.provider)  # handlers' own spans join the trace
        self.tracers = TypeOnlyProvider(self.provider)
        self.tracer = self.tracers.get_tracer("wecom_bus")
        RedisInstrumentor().instrument(tracer_provider=self.tracers)

    def close(self) -> None:
        RedisInstrumentor().uninstrument()
        self.provider.shutdown()

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, Any], kind: str, parent: str
    ) -> Iterator[Span]:
        context = _propagator.extract({"traceparent": parent}) if parent else None
        with self.tracer.start_as_current_span(
            name, context=context, kind=SpanKind[kind.upper()], attributes=attributes
        ) as current:
            try:
                yield current
            except BaseException as exc:  # the status is TypeOnly's: the exception's type
                cause = exc.__context__
                errcode = getattr(exc, "errcode", None) or getattr(cause, "errcode", None)
                if isinstance(errcode, int) and errcode:
                    current.set_attribute("wecom.errcode", errcode)
                raise

    async def deliver(
        self, work: Coroutine[Any, Any, T], parent: str, attributes: Mapping[str, Any]
    ) -> T:
        with self.span("bus.deliver", attributes, "consumer", parent):
            return await work

    @staticmethod
    def current() -> SpanContext | None:
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    @staticmethod
    def traceparent(context: SpanContext) -> str:
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def instrument_http(self, client: httpx.AsyncClient) -> None:
        HTTPXClientInstrumentor.instrument_client(
            client, tracer_provider=self.tracers, request_hook=_scrub_url
        )


async def _scrub_url(current: Span, request: RequestInfo) -> None:
    """httpx request hook: set the URL attributes again, without access_token or corpsecret."""
    attributes: Mapping[str, Any] = getattr(current, "attributes", None) or {}
    for key in ("url.full", "http.url"):
        if key in attributes:
            current.set_attribute(key, scrub(str(request.url)))
