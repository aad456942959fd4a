"""``Http1Wire``: message/send and the other JSON POSTs straight over HTTP/1.1 keep-alive
connections, without an HTTP library in between (``shared.wecom.wire``).

aiohttp builds, per request, a request object, a response object, a header multidict, a
payload, cookie and proxy lookups and several timers: most of a send's HTTP cost (a POST on
loopback, client and a trivial server in one process: 84 µs with aiohttp, 26 µs here).
WeCom's answers to these POSTs are small JSON objects, so a POST here is one write of bytes
prepared once per token, and its answer is read by a parser of the little HTTP/1.1 that can
come back: a status line, headers, and a body by ``Content-Length``, ``chunked`` or until the
connection closes (gzip or deflate decoded, interim 1xx answers skipped). TLS is the standard
library's with the system's certificates (``SSL_CERT_FILE`` honoured) and the host's name
checked. Through a proxy the client keeps aiohttp.

Connections: at most ``max_connections`` in use, a request waiting ``pool`` seconds at most
for one; up to ``max_keepalive_connections`` kept idle, for ``keepalive_expiry`` seconds, and
one the server closed is never taken. Timeouts: ``connect`` for connecting (TLS included),
``read`` for the whole answer. A request that fails or is cancelled closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from typing import cast
from urllib.parse import quote, urlsplit

import httpx

from shared.wecom.errors import WeComUnavailableError, scrub

__all__ = ["Http1Wire", "parse_answer"]

_MAX_ANSWER = 1 << 20  # WeCom answers these POSTs in a few hundred bytes
_DECODE = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class BadAnswer(ValueError):
    """What came back is not HTTP/1.x (or too large): the connection is dropped."""


def parse_answer(data: bytes | bytearray, eof: bool) -> tuple[int, bytes, bool] | None:
    """(status, body, keep-alive) of the first complete answer in ``data``, else None (wait
    for more; ``eof``: no more comes). Interim 1xx answers are skipped."""
    start = 0
    while True:
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            if eof or len(data) > _MAX_ANSWER:
                raise BadAnswer("the answer's headers never ended")
            return None
        lines = bytes(data[start:end]).split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise BadAnswer(f"not an HTTP/1.x answer: {lines[0][:40]!r}")
        status = int(rest[:3])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadAnswer("a header line without a colon")
            headers[name.strip().lower()] = value.strip().lower()
        if 100 <= status < 200:
            start = end + 4
            continue
        chunked = headers.get(b"transfer-encoding", b"").endswith(b"chunked")
        if status in (204, 304):  # never a body
            body: bytes | None = b""
        elif chunked:
            body = _chunked(data, end + 4, eof)
        else:
            body = _body(data, end + 4, headers.get(b"content-length"), eof)
        if body is None:
            return None
        if coding := headers.get(b"content-encoding"):
            if coding not in _DECODE:
                raise BadAnswer(f"an answer encoded as {coding.decode(errors='replace')}")
            body = zlib.decompress(body, _DECODE[coding])
        delimited = chunked or b"content-length" in headers or status in (204, 304)
        keep = delimited and version != b"HTTP/1.0" and headers.get(b"connection") != b"close"
        return status, body, keep


def _body(data: bytes | bytearray, at: int, length: bytes | None, eof: bool) -> bytes | None:
    """The body from ``at``: ``length`` bytes, or (no length) all until the connection closes."""
    if length is not None:
        if not length.isdigit() or int(length) > _MAX_ANSWER:
            raise BadAnswer("a bad Content-Length")
        if len(data) - at >= int(length):
            return bytes(data[at : at + int(length)])
    elif eof:  # no length: the body ends with the connection
        return bytes(data[at:])
    if eof:
        raise BadAnswer("the connection closed inside the answer")
    return None


def _chunked(data: bytes | bytearray, at: int, eof: bool) -> bytes | None:
    """The body of a chunked answer from ``at``, once its last chunk and trailers are in."""
    parts: list[bytes] = []
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            break
        size_text = bytes(data[at:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadAnswer("a bad chunk size") from None
        if size == 0:  # the last chunk; its trailers (ignored) end with an empty line
            if data.find(b"\r\n\r\n", line_end) >= 0:
                return b"".join(parts)
            break
        if len(data) < line_end + 2 + size + 2:
            break
        parts.append(bytes(data[line_end + 2 : line_end + 2 + size]))
        at = line_end + 2 + size + 2
    if eof or len(data) > _MAX_ANSWER:
        raise BadAnswer("the chunked answer never ended")
    return None


class _Connection(asyncio.Protocol):
    """One connection: ``ask`` writes a request and waits for its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._data = bytearray()
        self._eof = False
        self._answer: asyncio.Future[tuple[int, bytes, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass of it

    def data_received(self, data: bytes) -> None:
        self._data += data
        self._check()

    def eof_received(self) -> bool:
        self._eof = self.closed = True
        self._check()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self.closed = True
        if self._answer is not None and not self._answer.done():
            self._check()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionResetError("the connection closed"))

    def _check(self) -> None:
        if self._answer is None or self._answer.done():
            if self._data or self._eof:  # nothing was asked: an answer now is a broken server
                self.closed = True
            return
        try:
            answer = parse_answer(self._data, self._eof)
        except (BadAnswer, zlib.error) as exc:
            self._answer.set_exception(exc)
            return
        if answer is not None:
            self._data.clear()
            self._answer.set_result(answer)

    async def ask(self, request: bytes) -> tuple[int, bytes, bool]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Wire:
    """The ``Wire`` of the module docstring, for ``base_url`` (http or https, no proxy)."""

    def __init__(
        self, base_url: str, *, limits: httpx.Limits, timeout: httpx.Timeout, user_agent: str
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._prefix = url.path.rstrip("/")
        host = url.netloc.rpartition("@")[2]  # the Host header: as in the URL, port included
        self._headers = (
            f"Host: {host}\r\nUser-Agent: {user_agent}\r\n"
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: "
        ).encode()
        self._timeout = timeout
        self._slots = asyncio.Semaphore(limits.max_connections or 100)
        self._keep = limits.max_keepalive_connections or 20
        self._expiry = limits.keepalive_expiry or 5.0
        self._idle: list[_Connection] = []
        self._heads: dict[str, tuple[str, bytes]] = {}  # endpoint -> (token, request line)
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def _head(self, endpoint: str, token: str) -> bytes:
        known = self._heads.get(endpoint)
        if known is not None and known[0] == token:
            return known[1]
        path = f"{self._prefix}/cgi-bin/{endpoint}?access_token={quote(token, safe='')}"
        head = f"POST {path} HTTP/1.1\r\n".encode() + self._headers
        self._heads[endpoint] = (token, head)
        return head

    async def post(self, endpoint: str, token: str, body: bytes) -> tuple[int, bytes]:
        request = self._head(endpoint, token) + b"%d\r\n\r\n" % len(body) + body
        try:
            async with asyncio.timeout(self._timeout.pool):
                await self._slots.acquire()
        except TimeoutError:
            raise WeComUnavailableError(endpoint, "timed out (no free connection)") from None
        try:
            return await self._exchange(endpoint, request)
        finally:
            self._slots.release()

    async def _exchange(self, endpoint: str, request: bytes) -> tuple[int, bytes]:
        conn: _Connection | None = None
        try:
            conn = self._take()
            if conn is None:
                async with asyncio.timeout(self._timeout.connect):
                    conn = await self._connect()
            async with asyncio.timeout(self._timeout.read):
                status, answer, keep = await conn.ask(request)
        except BaseException as exc:
            if conn is not None:
                conn.close()  # an answer may still be on its way: never reuse it
            if isinstance(exc, TimeoutError):
                raise WeComUnavailableError(endpoint, "timed out (TimeoutError)") from None
            if isinstance(exc, OSError | ValueError | zlib.error):
                detail = scrub(str(exc)) or "no detail"
                raise WeComUnavailableError(endpoint, f"{type(exc).__name__}: {detail}") from None
            raise
        self._give_back(conn, keep)
        return status, answer

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._expiry:
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Connection, keep: bool) -> None:
        if not keep or conn.closed or self._closed or len(self._idle) >= self._keep:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RuntimeError("this wire is closed")
        loop = asyncio.get_running_loop()
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()  # the system's CAs, SSL_CERT_FILE
        _, conn = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl if self._tls else None,
            server_hostname=self._host if self._tls else None,
        )
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
