"""Many commands in one round trip, without redis-py's pipeline machinery.

``Script.run_batch`` (every ``ScriptBatch``: the ingress's stores, the consumers' commits)
sends a handful of EVALSHA calls per event-loop tick. redis-py's ``Pipeline`` spends more CPU
around such a batch than Redis spends running it: each argument goes through its encoder's
type checks and each command through its response-callback, retry and watch machinery. Here
the commands are packed in one pass (bytes, str, int and float only: what scripts take) and
sent on one pooled connection; each reply is read by the connection's own parser, an error
reply in place. While tracing is on, batches go through redis-py's pipeline instead, so
that the Redis instrumentation still records their commands.

A connection that fails or is interrupted while a batch is in flight is dropped, never
returned to the pool with unread replies. A batch whose connection failed is sent once more on
a fresh connection, as redis-py's default retry does: callers only batch calls that are safe to
repeat (scripts that check what they already did).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import tracing

__all__ = ["pack", "send_batch"]

Arg = bytes | str | int | float
Early = Callable[[int, Any], None]  # (index of the command, its reply)
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def _arg(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # an int to Python, refused by redis-py too
        raise TypeError("cannot send a bool to Redis")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


# Length prefixes of the short arguments (nearly all: keys, numbers, SHA1s), made once.
_PREFIXES = [b"$%d\r\n" % n for n in range(1024)]


def pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """The RESP encoding of ``commands``, back to back."""
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for value in command:
            # str, bytes and int by exact type: nearly all arguments, without isinstance's walk.
            if type(value) is str:
                data = value.encode()
            elif type(value) is bytes:
                data = value
            elif type(value) is int:
                data = b"%d" % value
            else:
                data = _arg(value)
            n = len(data)
            append(_PREFIXES[n] if n < 1024 else b"$%d\r\n" % n)
            append(data)
            append(b"\r\n")
    return b"".join(out)


async def send_batch(
    redis: Redis, commands: Sequence[Sequence[Arg]], *, early: Early | None = None
) -> list[Any]:
    """Send ``commands`` in one write and read one reply each (an error reply in place).

    ``early(i, reply)`` is called with each reply but the last as soon as it is read: the last
    command may block (a consumer's XREADGROUP after its commits) while the others' callers
    go on. Connection errors and timeouts are raised (after one more try on a fresh
    connection, which may call ``early`` again for the same command).
    """
    if tracing.enabled():
        results = await _traced(redis, commands)
        if early is not None:
            for i, result in enumerate(results[:-1]):
                early(i, result)
        return results
    payload = pack(commands)
    for attempt in (1, 2):
        try:
            return await _round_trip(redis, payload, len(commands), early, fresh=attempt == 2)
        except _RETRYABLE:
            await _forget(redis.connection_pool)  # its other idle connections may be dead too
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _traced(redis: Redis, commands: Sequence[Sequence[Arg]]) -> list[Any]:
    """While tracing: through redis-py's pipeline, which the Redis instrumentation wraps in
    spans (commands only whose replies redis-py passes through unchanged come here)."""
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


# Connections this module keeps checked out of a pool between batches: a pool's checkout
# (lock, bookkeeping, a readiness probe of the socket) costs as much as packing a batch. Kept
# connections never hold unread replies (any failure drops the connection); a failure forgets
# all of a pool's, and the retry checks a fresh one out of the pool.
_KEEP = 8
_idle: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


async def _checkout(pool: Any, fresh: bool) -> Any:
    idle = None if fresh else _idle.get(pool)
    if idle:
        conn = idle.pop()
        if not conn.is_connected:
            try:
                await conn.connect()
            except BaseException:
                await pool.release(conn)
                raise
        return conn
    return await pool.get_connection()


async def _checkin(pool: Any, conn: Any) -> None:
    idle = _idle.setdefault(pool, [])
    if len(idle) < _KEEP and conn.is_connected and not getattr(conn, "should_reconnect", bool)():
        idle.append(conn)
    else:
        await pool.release(conn)


async def _forget(pool: Any) -> None:
    for conn in _idle.pop(pool, []):
        await conn.disconnect(nowait=True)
        await pool.release(conn)


async def _round_trip(
    redis: Redis, payload: bytes, replies: int, early: Early | None, *, fresh: bool
) -> list[Any]:
    """One write, ``replies`` replies, on a kept connection.

    Leaner than ``send_packed_command`` and ``read_response`` per reply, which cost more than
    the batch's own work: those start a task per write (``wait_for``) and a timeout per reply.
    Here the batch has one timer, which closes the connection when it fires: the read then
    fails at once, the connection is dropped, and the caller sees a ``TimeoutError``.
    """
    pool = redis.connection_pool
    conn = await _checkout(pool, fresh)
    results: list[Any] = []
    expired: list[bool] = []
    timer = None
    if conn.socket_timeout is not None:  # None: no limit, as redis-py has it
        loop = asyncio.get_running_loop()
        timer = loop.call_later(conn.socket_timeout, _expire, conn, expired)
    try:
        parser = conn._parser
        conn._writer.write(payload)
        await conn._writer.drain()
        for i in range(replies):
            results.append(await parser.read_response())  # an error reply: in place
            if early is not None and i < replies - 1:
                early(i, results[-1])
    except BaseException as exc:
        await conn.disconnect(nowait=True)  # replies may still be on the way: never reuse it
        await pool.release(conn)
        if expired:
            raise RedisTimeoutError(f"no answer within {conn.socket_timeout} s") from None
        if isinstance(exc, OSError) and not isinstance(exc, RedisConnectionError):
            raise RedisConnectionError(f"Redis connection failed: {exc}") from exc
        raise
    finally:
        if timer is not None:
            timer.cancel()
    await _checkin(pool, conn)
    return results


def _expire(conn: Any, expired: list[bool]) -> None:
    """The batch's time is up: close its connection, which fails the read in progress."""
    expired.append(True)
    conn._writer.transport.abort()
