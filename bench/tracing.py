"""What the tracing hooks cost the ingress: ``python -m bench.tracing``.

A microbenchmark of the ingress's POST path in one process (``Receiver``, the plain ASGI app):
query string, timestamp, body, signature, decryption, parsing, dedup key, envelope JSON, with a
store that answers at once (Redis is not what is measured). It runs three ways:

- **off**: as shipped, tracing off (no ``wecom-bus[otel]`` configured): the hooks are no-ops;
- **hooks**: the no-op hooks alone, as many as one callback calls (three spans and ``ids()``),
  against the random id the ingress would make anyway; so the hooks' share of "off";
- **on**: tracing on with spans handed to an exporter that drops them (the SDK's own cost,
  for information).

Figures are the best of several rounds of CPU time (``process_time``), so other load on the
machine inflates them less than it would wall time.
"""

from __future__ import annotations

import asyncio
import os
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.ingress.callback import AppReceiver, Receiver
from shared import tracing
from shared.config import AppSettings, Secret
from shared.protocol.crypto import CallbackCrypto

__all__ = ["main", "measure"]

SAMPLE = Path(__file__).parent.parent / "tests" / "samples" / "inbound" / "text.xml"
TOKEN, AES_KEY, CORP, AGENT = "Token", "a" * 43, "wwcorp", 1000002


class _Stored:
    """A store that answers at once: an entry id for every call."""

    def once(
        self, app: str, key: str, data: bytes, member: str = ""
    ) -> asyncio.Future[bytes | None]:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        future.set_result(b"1-0")
        return future


def _receiver() -> Receiver:
    app = AppSettings(
        name="default",
        corp_id=CORP,
        agent_id=AGENT,
        token=Secret(TOKEN),
        encoding_aes_key=Secret(AES_KEY),
    )
    receivers = {"default": AppReceiver.build(app)}
    return Receiver(receivers, _Stored(), max_skew=0, max_body=1 << 20)  # type: ignore[arg-type]


def _callback() -> tuple[dict[str, Any], bytes]:
    crypto = CallbackCrypto(TOKEN, AES_KEY, CORP)
    ts = str(int(time.time()))
    params, body = crypto.build_callback(
        SAMPLE.read_bytes(), timestamp=ts, nonce="n", agent_id=AGENT
    )
    query = "&".join(f"{k}={v}" for k, v in params.items()).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/callback",
        "query_string": query,
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    return scope, body


async def _callbacks(receiver: Receiver, scope: dict[str, Any], body: bytes, number: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(number):
        await receiver(scope, receive, send)  # type: ignore[arg-type]
    elapsed = time.process_time() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"the receiver answered {sorted(set(statuses))}, not 200")
    return elapsed


def _ingress_us(rounds: int, number: int) -> float:
    receiver, (scope, body) = _receiver(), _callback()
    best = min(asyncio.run(_callbacks(receiver, scope, body, number)) for _ in range(rounds))
    return best / number * 1e6


def _hooks_ns(rounds: int, number: int) -> tuple[float, float]:
    """(ns of one callback's no-op hooks, ns of the random id the ingress needs anyway)."""

    def hooks() -> None:
        with tracing.span("ingress.callback", {"wecom_bus.app": "default"}, kind="server") as s:
            s.set_attribute("http.response.status_code", 200)
            with tracing.span("ingress.verify"):
                pass
            tracing.ids()
            with tracing.span("ingress.store", {"wecom_bus.msg_type": "TextMessage"}):
                pass

    def plain() -> None:
        os.urandom(8).hex()

    timer = time.process_time
    spent = [
        min(timeit.repeat(f, number=number, repeat=rounds, timer=timer)) for f in (hooks, plain)
    ]
    return spent[0] / number * 1e9, spent[1] / number * 1e9


def measure(rounds: int = 7, number: int = 2000) -> dict[str, float]:
    """µs per callback off and on, and the no-op hooks' ns."""
    if tracing.enabled():
        raise RuntimeError("measure with tracing off: it turns tracing on itself")
    result: dict[str, float] = {"off_us": _ingress_us(rounds, number)}
    result["hooks_ns"], result["plain_id_ns"] = _hooks_ns(rounds, number * 10)
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Dropped(InMemorySpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracing.setup("bench", exporter=Dropped())
    try:
        result["on_us"] = _ingress_us(rounds, number)
    finally:
        tracing.shutdown()
    return result


def main(rounds: int = 7, number: int = 2000) -> int:
    r = measure(rounds, number)
    extra = r["hooks_ns"] - r["plain_id_ns"]
    print(f"ingress POST path, tracing off   {r['off_us']:8.1f} µs per callback")
    print(
        f"  of which the no-op hooks        {extra:8.0f} ns "
        f"({extra / 10 / r['off_us']:.2f} % of it)"
    )
    print(f"ingress POST path, tracing on    {r['on_us']:8.1f} µs per callback (3 spans each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
