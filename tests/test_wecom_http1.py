"""The straight HTTP/1.1 wire (shared.wecom.http1) against a tiny real server on loopback that
answers with crafted bytes: how answers are read (llhttp through httptools, the body capped and
decoded within the cap), which connections are kept, which dropped; TLS with the host's
certificate checked. Its answers, errcodes, token refresh and failures against the fake WeCom
are in tests/test_wecom_wire.py."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from shared.wecom import WeComUnavailableError
from shared.wecom.http1 import Http1Wire

JSON = b'{"errcode":0,"errmsg":"ok","msgid":"m1"}'
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)
QUICK = httpx.Timeout(2.0, connect=2.0)
MiB = 1 << 20

OK = b"HTTP/1.1 200 OK\r\n"
CHUNKS = b"Transfer-Encoding: chunked\r\n\r\n"
CHUNKED = OK + CHUNKS + b'3;x=1\r\n{"a\r\n4\r\n":1}\r\n0\r\nX-T: 1\r\n\r\n'
GZIPPED = gzip.compress(JSON)
DEFLATED = zlib.compress(JSON)
BOMB = gzip.compress(bytes(4 * MiB))  # 4 KiB that expand to 4 MiB


def apart(data: bytes) -> tuple[bytes, ...]:
    """``data`` one byte per write."""
    return tuple(data[i : i + 1] for i in range(len(data)))


class Crafted:
    """A server answering every request with ``writes`` (each sent on its own), then closing
    the connection if ``close``; it counts the connections made and those the client closed."""

    def __init__(self, *writes: bytes, close: bool = False) -> None:
        self.writes = writes
        self.close = close
        self.connections = 0
        self.dropped = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                for data in self.writes:
                    writer.write(data)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # so that the client reads each write apart
                if self.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.dropped += 1
        finally:
            writer.close()


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Start = Callable[..., Awaitable[int]]


@pytest.fixture
async def server() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(serve: Serve, tls: ssl.SSLContext | None = None) -> int:
        started = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
        servers.append(started)
        port: int = started.sockets[0].getsockname()[1]
        return port

    yield start
    for one in servers:
        one.close()
        await one.wait_closed()


@pytest.fixture
async def wire_to(server: Start) -> AsyncIterator[Callable[[Crafted], Awaitable[Http1Wire]]]:
    wires: list[Http1Wire] = []

    async def make(crafted: Crafted) -> Http1Wire:
        port = await server(crafted)
        wires.append(
            Http1Wire(f"http://127.0.0.1:{port}", limits=LIMITS, timeout=QUICK, user_agent="t")
        )
        return wires[-1]

    yield make
    for wire in wires:
        await wire.aclose()


@pytest.mark.parametrize(
    ("crafted", "answer", "connections"),
    [
        (Crafted(OK + b"Content-Length: 2\r\n\r\n{}"), (200, b"{}"), 1),
        (Crafted(CHUNKED), (200, b'{"a":1}'), 1),
        (Crafted(*apart(CHUNKED)), (200, b'{"a":1}'), 1),
        (Crafted(b"HTTP/1.1 204 No Content\r\n\r\n"), (204, b""), 1),
        (
            Crafted(
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 502 Bad\r\nContent-Length: 1\r\n\r\nx",
            ),
            (502, b"x"),
            1,
        ),
        (Crafted(*apart(b"HTTP/1.1 100 Continue\r\n\r\n" + CHUNKED)), (200, b'{"a":1}'), 1),
        (
            Crafted(
                OK + b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(DEFLATED),
                DEFLATED,
            ),
            (200, JSON),
            1,
        ),
        (Crafted(OK + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}"), (200, b"{}"), 2),
        (Crafted(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"), (200, b"{}"), 2),
        # no length, not chunked: the body ends with the connection, which is never reused
        (Crafted(OK + b"Content-Type: x\r\n\r\n", b"{", b"}", close=True), (200, b"{}"), 2),
        (
            Crafted(OK + b"Content-Encoding: gzip\r\n\r\n", *apart(GZIPPED), close=True),
            (200, JSON),
            2,
        ),
    ],
)
async def test_answers_are_read_and_their_connection_kept_when_it_may_be(
    wire_to: Callable[[Crafted], Awaitable[Http1Wire]],
    crafted: Crafted,
    answer: tuple[int, bytes],
    connections: int,
) -> None:
    wire = await wire_to(crafted)
    for _ in range(2):
        assert await wire.post("message/send", "T", b"{}") == answer
    assert crafted.connections == connections


@pytest.mark.parametrize(
    ("crafted", "error"),
    [
        (Crafted(b"SSH-2.0-OpenSSH\r\n\r\n"), "HttpParserError"),
        (Crafted(OK + CHUNKS + b"zz\r\n{}\r\n0\r\n\r\n"), "HttpParserError"),
        (
            Crafted(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"),
            "switched",
        ),
        (Crafted(OK + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"), "encoded as br"),
        (Crafted(OK + b"Content-Length: %d\r\n\r\n" % (MiB + 1), bytes(MiB + 1)), "over 1 MiB"),
        (
            Crafted(OK + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(BOMB), BOMB),
            "over 1 MiB",
        ),
        (Crafted(OK + b"Content-Encoding: gzip\r\n\r\n", BOMB, close=True), "over 1 MiB"),
        (Crafted(OK + b"Content-Encoding: gzip\r\n\r\n", GZIPPED[:-9], close=True), "cut short"),
        (Crafted(OK + b"Content-Length: 9\r\n\r\n{}", close=True), "closed inside the answer"),
        (Crafted(OK + b"Content-Length: 2", close=True), "closed inside the answer"),
        (Crafted(OK + CHUNKS + b"2\r\n{}\r\n", close=True), "closed inside the answer"),
        (Crafted(b"HTTP/1.1 100 Continue\r\n\r\n", close=True), "closed inside the answer"),
        (Crafted(close=True), "ConnectionResetError"),
    ],
)
async def test_what_is_not_a_whole_answer_fails_and_drops_the_connection(
    wire_to: Callable[[Crafted], Awaitable[Http1Wire]], crafted: Crafted, error: str
) -> None:
    wire = await wire_to(crafted)
    with pytest.raises(WeComUnavailableError, match=error):
        await wire.post("message/send", "T", b"{}")
    async with asyncio.timeout(2):
        while not crafted.close and not crafted.dropped:  # the client closed its side
            await asyncio.sleep(0.01)
    with pytest.raises(WeComUnavailableError, match=error):
        await wire.post("message/send", "T", b"{}")
    assert crafted.connections == 2  # never the broken one again


async def test_a_compressed_answer_is_never_expanded_past_the_cap(
    wire_to: Callable[[Crafted], Awaitable[Http1Wire]],
) -> None:
    """The gzip bomb arrives in one read; its decoder stops a byte past 1 MiB instead of
    expanding all 4 MiB first (which would take twice that at its peak)."""
    head = OK + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(BOMB)
    wire = await wire_to(Crafted(head + BOMB))
    tracemalloc.start()
    try:
        with pytest.raises(WeComUnavailableError, match="over 1 MiB"):
            await wire.post("message/send", "T", b"{}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert MiB < peak < 3 * MiB  # zlib's output blocks, then the bytes joined from them


async def test_a_connection_the_server_closed_is_not_reused(
    wire_to: Callable[[Crafted], Awaitable[Http1Wire]],
) -> None:
    """The server closes after answering, without saying so first: the next POST, sent after
    the close arrived, takes a new connection instead of failing on the old one."""
    crafted = Crafted(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON), JSON), close=True
    )
    wire = await wire_to(crafted)
    for _ in range(3):
        assert await wire.post("message/send", "T", b"{}") == (200, JSON)
        await asyncio.sleep(0.05)  # the server's close arrives
    assert crafted.connections == 3


async def test_a_silent_server_times_out_and_a_full_pool_waits_its_pool_timeout(
    server: Start,
) -> None:
    """The read timeout fails the POST and drops its connection; with every connection busy,
    another POST waits ``pool`` seconds for one, then fails; once a connection is free again,
    POSTs go through."""
    answering = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await answering.wait()  # silent until told to answer
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON), JSON))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = await server(serve)
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(0.3, connect=2.0, pool=0.2)
    wire = Http1Wire(f"http://127.0.0.1:{port}", limits=one, timeout=timeout, user_agent="t")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(wire.post("message/send", "T", b"{}"))
        await asyncio.sleep(0.05)
        with pytest.raises(WeComUnavailableError) as waited:
            await wire.post("message/send", "T", b"{}")
        assert "no free connection" in waited.value.reason
        with pytest.raises(WeComUnavailableError) as silent:
            await first
        assert "timed out" in silent.value.reason
        assert 0.3 <= loop.time() - started < 2.0
        answering.set()
        assert await wire.post("message/send", "T", b"{}") == (200, JSON)
    finally:
        await wire.aclose()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl): (certificate, key)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_checks_the_hosts_certificate(
    server: Callable[..., Awaitable[int]],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    port = await server(Crafted(OK + b"Content-Length: %d\r\n\r\n%s" % (len(JSON), JSON)), tls)
    untrusted = Http1Wire(f"https://localhost:{port}", limits=LIMITS, timeout=QUICK, user_agent="t")
    with pytest.raises(WeComUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusted.post("message/send", "T", b"{}")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # now the system trusts it
    trusted = Http1Wire(f"https://localhost:{port}", limits=LIMITS, timeout=QUICK, user_agent="t")
    try:
        assert await trusted.post("message/send", "T", b"{}") == (200, JSON)
    finally:
        await trusted.aclose()
        await untrusted.aclose()
