"""The straight HTTP/1.1 wire (shared.wecom.http1): its reader of WeCom's answers, TLS with the
host's certificate checked, and connections a server closed never reused. Its answers,
errcodes, token refresh and failures against the fake WeCom are in tests/test_wecom_wire.py."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from shared.wecom import WeComUnavailableError
from shared.wecom.http1 import BadAnswer, Http1Wire, parse_answer

JSON = b'{"errcode":0,"errmsg":"ok","msgid":"m1"}'
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)
QUICK = httpx.Timeout(2.0, connect=2.0)


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKS = b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (OK + b"Content-Length: 2\r\n\r\n{}", (200, b"{}", True)),
        (OK + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (OK + CHUNKS + b'3;x=1\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n', (200, b'{"a":1}', True)),
        (OK + CHUNKS + b"2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n", (200, b"{}", True)),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 Bad\r\nContent-Length: 1\r\n\r\nx",
            (502, b"x", True),
        ),
    ],
)
def test_answers_are_read_by_length_by_chunks_and_after_interim_ones(
    data: bytes, answer: tuple[int, bytes, bool]
) -> None:
    assert parse_answer(data, eof=False) == answer
    assert parse_answer(data[:-1], eof=False) is None  # not complete yet: wait for more


def test_an_answer_without_length_ends_with_the_connection_and_gzip_is_decoded() -> None:
    data = OK + b"Content-Encoding: gzip\r\n\r\n" + gzip.compress(JSON)
    assert parse_answer(data, eof=False) is None
    assert parse_answer(data, eof=True) == (200, JSON, False)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",  # closed inside the body
        b"HTTP/1.1 200 OK\r\nContent-Length: 2",  # closed inside the headers
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}",
    ],
)
def test_what_is_not_a_whole_http_answer_is_refused(data: bytes) -> None:
    with pytest.raises(BadAnswer):
        parse_answer(data, eof=True)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One answer per connection, then the connection closed (without saying so first)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON), JSON))
    await writer.drain()
    writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
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


async def test_a_connection_the_server_closed_is_not_reused(
    server: Callable[..., Awaitable[int]],
) -> None:
    port = await server(answer_once)
    wire = Http1Wire(f"http://127.0.0.1:{port}", limits=LIMITS, timeout=QUICK, user_agent="t")
    try:
        for _ in range(3):
            assert await wire.post("message/send", "T", b"{}") == (200, JSON)
            await asyncio.sleep(0.05)  # the server's close arrives
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
    port = await server(answer_once, tls)
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
