"""Faults injected on request: errcodes, slow answers, hangs, and connection resets.

``POST /fake/faults`` queues a ``FaultSpec``; each qyapi request (``/cgi-bin/…``) takes the first
queued fault whose ``path`` matches and that fault's count goes down by one. Faults act at the
ASGI level, before routing, because two of them cannot be expressed as a response:

- ``timeout``: the request is read, then nothing is answered until the client gives up (or
  ``seconds`` pass, at most 30). With ``deliver`` the request is processed first and only the
  answer is withheld, like a WeCom that sent the message but whose answer was lost.
- ``reset``: the TCP connection is aborted with SO_LINGER 0, so the kernel sends RST and the
  client sees "connection reset" instead of an answer. This needs the transport, which uvicorn's
  ``send`` callable carries as ``send.__self__.transport``; under a server without one (e.g.
  httpx.ASGITransport) the fault raises ConnectionResetError instead.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devkit.fakewecom.answers import client_ip, error_body

__all__ = ["Fault", "FaultSpec", "Faults", "apply_fault", "parse_fault"]

MAX_SECONDS = 30.0


class FaultSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One fault; exactly one of errcode, delay, timeout, reset and revoke_tokens is set."""

    errcode: int | None = None
    errmsg: str | None = None  # verbatim errmsg; default: WeCom's text for the code
    delay: float | None = None  # seconds before the request is processed normally
    timeout: bool = False
    seconds: float = MAX_SECONDS  # how long a timeout hangs at most
    deliver: bool = False  # timeout: process the request, then withhold the answer
    reset: bool = False
    revoke_tokens: bool = False  # applied at once: every token so far answers 42001
    count: int = 1
    path: str | None = None  # e.g. "message/send" or "/cgi-bin/gettoken"; None: every API

    @property
    def kind(self) -> str:
        kinds = [
            name
            for name, on in (
                ("errcode", self.errcode is not None),
                ("delay", self.delay is not None),
                ("timeout", self.timeout),
                ("reset", self.reset),
                ("revoke_tokens", self.revoke_tokens),
            )
            if on
        ]
        if len(kinds) != 1:
            raise ValueError("give exactly one of errcode, delay, timeout, reset, revoke_tokens")
        return kinds[0]


_decode_spec = msgspec.json.Decoder(FaultSpec)


def parse_fault(data: bytes) -> FaultSpec:
    """Decode and check a fault; raises ValueError with a message fit for a 400 answer."""
    try:
        spec = _decode_spec.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(str(exc)) from None
    kind = spec.kind
    if not 1 <= spec.count <= 1_000_000:
        raise ValueError("count must be 1 to 1000000")
    if kind == "delay" and not 0 < (spec.delay or 0) <= MAX_SECONDS:
        raise ValueError(f"delay must be more than 0 and at most {MAX_SECONDS:g} seconds")
    if not 0 < spec.seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be more than 0 and at most {MAX_SECONDS:g}")
    return spec


def _normalise(path: str | None) -> str | None:
    if path is None:
        return None
    path = path.strip("/")
    return "/" + (path if path.startswith("cgi-bin/") else f"cgi-bin/{path}")


@dataclass(slots=True)
class Fault:
    spec: FaultSpec
    remaining: int
    path: str | None

    def to_json(self) -> dict[str, Any]:
        return {**msgspec.to_builtins(self.spec), "remaining": self.remaining, "path": self.path}


class Faults:
    """The queue of pending faults, oldest first."""

    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(spec, spec.count, _normalise(spec.path))
        self.pending.append(fault)
        return fault

    def take(self, path: str) -> FaultSpec | None:
        """The fault for a request to ``path``, counted down; None when none applies."""
        for fault in self.pending:
            if fault.path is None or fault.path == path.rstrip("/"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.pending.remove(fault)
                return fault.spec
        return None

    def clear(self) -> None:
        self.pending.clear()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _until_disconnect(receive: Receive, seconds: float) -> bool:
    """Wait (at most ``seconds``) for the client to go away; True if it did."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _send_json(send: Send, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _reset(receive: Receive, send: Send) -> None:
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("fake WeCom: connection reset (fault injected)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Return only once the server has seen the loss, or it would try to answer 500.
    await _until_disconnect(receive, 1.0)


RecordFault = Callable[[Scope, bytes, FaultSpec], None]


async def apply_fault(
    spec: FaultSpec, scope: Scope, receive: Receive, send: Send, app: ASGIApp, record: RecordFault
) -> None:
    """Answer one qyapi request the way ``spec`` says; ``app`` processes it when it should."""
    if spec.delay is not None:
        await asyncio.sleep(spec.delay)
        await app(scope, receive, send)
        return
    if spec.timeout and spec.deliver:
        await _deliver_then_hang(spec, scope, receive, send, app)
        return
    body = await _read_body(receive)
    record(scope, body, spec)
    if spec.reset:
        await _reset(receive, send)
        return
    if spec.timeout:
        if await _until_disconnect(receive, spec.seconds):
            return
        code = -1
    else:
        code = spec.errcode if spec.errcode is not None else -1
    answer = error_body(code, client_ip(scope.get("client")))
    if spec.errmsg is not None:
        answer["errmsg"] = spec.errmsg
    await _send_json(send, answer)


async def _deliver_then_hang(
    spec: FaultSpec, scope: Scope, receive: Receive, send: Send, app: ASGIApp
) -> None:
    held: list[Message] = []

    async def hold(message: Message) -> None:
        held.append(message)

    await app(scope, receive, hold)
    if await _until_disconnect(receive, spec.seconds):
        return
    for message in held:
        await send(message)
