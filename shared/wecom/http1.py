"""``Http1Wire``: message/send and the other JSON POSTs straight over HTTP/1.1 keep-alive
connections, without an HTTP library in between (``shared.wecom.wire``).

aiohttp builds, per request, a request object, a response object, a header multidict, a
payload, cookie and proxy lookups and several timers: most of a send's HTTP cost (a POST on
loopback, client and a trivial server in one process: 84 µs with aiohttp, 23 µs here).
WeCom's answers to these POSTs are small JSON objects, so a POST here is one write of bytes
prepared once per token, and its answer is parsed by llhttp (Node.js's HTTP parser, through
httptools: the one uvicorn parses the ingress's requests with). Framing is where hand-written
HTTP goes wrong (chunk sizes, extensions and trailers, interim answers, headers that contradict
each other); llhttp reads every HTTP/1 message Node.js gets, refuses ambiguous framing, and
runs in C as the bytes arrive. What this module adds is small: the body collected and capped
at 1 MiB (an answer's bytes at 2 MiB), gzip or deflate decoded within that cap, interim 1xx
answers skipped, and a body without length or chunks ended by the connection's close
(httptools has no call to tell llhttp the stream ended). TLS is the standard
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

import httptools
import httpx

from shared.wecom.errors import WeComUnavailableError, unavailable

__all__ = ["Http1Wire"]

_MAX_BODY = 1 << 20  # WeCom answers these POSTs in a few hundred bytes
_MAX_READ = 2 * _MAX_BODY  # the bytes of one answer as sent: headers and chunk framing too
_DECODE = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class BadAnswer(ValueError):
    """What came back is not a whole answer, or too large: the connection is dropped."""


class _Connection(asyncio.Protocol):
    """One connection: ``ask`` writes a request and waits for its answer, which llhttp parses
    as the bytes arrive, calling the ``on_*`` methods below (httptools' callbacks)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._read = 0  # bytes of the awaited answer so far
        self._status = 0
        self._framed = False  # the body's end is known: Content-Length or chunked
        self._until_close = False  # the headers are in, and the body ends with the connection
        self._decoder: zlib._Decompress | None = None  # Content-Encoding: gzip or deflate
        self._body: list[bytes] = []
        self._size = 0  # of the body, decoded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass of it

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.closed = True  # nothing was asked: an answer now is a broken server
            return
        self._read += len(data)
        if self._read > _MAX_READ:
            self._fail(BadAnswer("an answer over 2 MiB"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # a callback below raised its own
            self._fail(exc.__context__ or exc)  # error (too large, a bad coding): it says more
        except httptools.HttpParserError as exc:  # not HTTP/1.x, or broken framing
            self._fail(exc)
        except httptools.HttpParserUpgrade:  # 101 Switching Protocols, to a POST
            self._fail(BadAnswer("the server switched protocols"))

    def eof_received(self) -> bool:
        self._ended()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None = None) -> None:
        """The server closed: the end of a body without length; any other answer awaited fails."""
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        if self._until_close:
            try:
                self._settle(keep=False)
            except (BadAnswer, zlib.error) as error:
                self._fail(error)
        elif self._read:
            self._fail(BadAnswer("the connection closed inside the answer"))
        else:
            self._fail(exc or ConnectionResetError("the connection closed before an answer"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True  # the parser stopped mid-stream: nothing more can be read here
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            raise BadAnswer("an answer to nothing asked")  # bytes after the answer, same read
        self._framed = False
        self._decoder = None
        self._body.clear()
        self._size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._framed = True
        elif name == b"transfer-encoding":  # chunked when it is the last coding, as for llhttp
            self._framed = value.rstrip().lower().endswith(b"chunked")
        elif name == b"content-encoding":
            coding = value.strip().lower()
            if coding not in _DECODE:
                raise BadAnswer(f"an answer encoded as {coding.decode(errors='replace')}")
            self._decoder = zlib.decompressobj(_DECODE[coding])

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._until_close = not self._framed  # 1xx, 204 and 304 complete at once instead

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:  # a byte past the cap is enough to know it is too large
            body = self._decoder.decompress(body, _MAX_BODY - self._size + 1)
        self._size += len(body)
        if self._size > _MAX_BODY:
            raise BadAnswer("an answer's body over 1 MiB")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._until_close = False
        if self._status >= 200:  # else an interim answer (100 Continue): the real one follows
            self._settle(keep=self._parser.should_keep_alive())

    def _settle(self, keep: bool) -> None:
        """The answer is whole: hand it to ``ask``."""
        # on_body's decoder took all its input (else it was over the cap and failed), so nothing
        # is left to flush: if its stream has not ended, the body was cut short
        if self._decoder is not None and not self._decoder.eof:
            raise BadAnswer("a compressed body cut short")
        assert self._answer is not None
        self._answer.set_result((self._status, b"".join(self._body), keep))

    async def ask(self, request: bytes, limit: float | None) -> tuple[int, bytes, bool]:
        """Write ``request`` and wait for its answer; ``TimeoutError`` after ``limit``
        seconds (a timer failing the awaited answer: half the CPU of ``asyncio.timeout``)."""
        assert self.transport is not None
        self._read = 0
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self._answer = answer
        self.transport.write(request)
        if limit is None:
            return await answer
        timer = loop.call_later(limit, _time_up, answer)
        try:
            return await answer
        finally:
            timer.cancel()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _time_up(answer: asyncio.Future[tuple[int, bytes, bool]]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


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
        if self._slots.locked():  # else acquired at once: no timer needed
            try:
                async with asyncio.timeout(self._timeout.pool):
                    await self._slots.acquire()
            except TimeoutError:
                raise WeComUnavailableError(endpoint, "timed out (no free connection)") from None
        else:
            await self._slots.acquire()
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
            status, answer, keep = await conn.ask(request, self._timeout.read)
        except BaseException as exc:
            if conn is not None:
                conn.close()  # an answer may still be on its way: never reuse it
            if isinstance(exc, TimeoutError):
                raise unavailable(endpoint, exc, timed_out=True) from None
            if isinstance(exc, OSError | ValueError | zlib.error | httptools.HttpParserError):
                raise unavailable(endpoint, exc, timed_out=False) from None
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
