"""TokenCache: one access_token per app, shared in Redis by every sender replica.

Keys (both carry the hash tag ``{<corp>:<agent>}`` so they live in one Redis Cluster slot)::

    <prefix>:token:{<corp>:<agent>}        the token; TTL = expires_in - margin (>= expires_in / 2)
    <prefix>:token-lock:{<corp>:<agent>}   refresh lock: SET NX PX, random owner, compare-and-delete

``get()`` serves the in-process copy while it is fresh, else reads Redis. On a miss one refresher
across all replicas takes the lock and calls gettoken; the others poll the key with a short
backoff. A dead holder's lock expires after ``lock_ttl``; a live one extends it while it works.
When the remaining TTL drops below ``refresh_ahead``, one replica refreshes in the background
while every replica keeps using the current token.

Within one process all callers share one load (single flight). gettoken failures back off
exponentially with jitter inside one refresh, and after a failed refresh further ``get()`` calls
fail fast until the next attempt is due, so a bad secret never becomes a hot loop. If Redis is
unreachable the in-process copy keeps serving; without one, the process fetches directly, still
single flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus import names
from shared.bus.scripts import Script
from shared.wecom.errors import RateLimitedError, RetryableAPIError, WeComUnavailableError
from shared.wecom.metrics import GETTOKEN_CALLS, TOKEN_REFRESHES

__all__ = ["TokenCache"]

log = logging.getLogger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)

_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")
_EXTEND = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")


class _Copy:
    __slots__ = ("expires_at", "refresh_at", "value")

    def __init__(self, value: str, expires_at: float, refresh_at: float) -> None:
        self.value = value
        self.expires_at = expires_at
        self.refresh_at = refresh_at


class TokenCache:
    """The TokenSource for WeComClient; ``fetch`` is ``WeComClient.gettoken``."""

    def __init__(
        self,
        redis: Redis,
        fetch: Callable[[], Awaitable[tuple[str, int]]],
        *,
        corp_id: str,
        agent_id: int,
        prefix: str = "wecom",
        margin: float = 300,
        lock_ttl: float = 10,
        refresh_ahead: float = 300,
        wait_timeout: float = 30,
        retry_budget: float = 10,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        attempt_timeout: float = 20,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._fetch = fetch
        self.key = names.token(prefix, corp_id, agent_id)
        self.lock_key = names.token_lock(prefix, corp_id, agent_id)
        self.margin = margin
        self.lock_ttl = lock_ttl
        self.refresh_ahead = refresh_ahead
        self.wait_timeout = wait_timeout
        self.retry_budget = retry_budget
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.attempt_timeout = attempt_timeout
        self._label = name or str(agent_id)
        self._clock = clock
        self._sleep = sleep
        self._copy: _Copy | None = None
        self._load: asyncio.Task[str] | None = None
        self._ahead: asyncio.Task[None] | None = None
        self._ahead_tried: str | None = None
        self._rejected: deque[str] = deque(maxlen=4)
        self._failures = 0
        self._not_before = 0.0
        self._last_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<TokenCache key={self.key!r}>"

    async def get(self) -> str:
        """A valid access_token; raises WeComAPIError/WeComUnavailableError after bounded waits."""
        copy, now = self._copy, self._clock()
        if copy is not None and now < copy.expires_at:
            if now >= copy.refresh_at:
                self._start_refresh_ahead(copy.value)
            return copy.value
        if self._load is None or self._load.done():
            if now < self._not_before and self._last_error is not None:
                raise self._last_error.with_traceback(None)
            self._load = asyncio.create_task(self._load_token())
            self._load.add_done_callback(_consume)
        # shield: one caller's cancellation must not cancel the load the others wait for.
        return await asyncio.shield(self._load)

    async def invalidate(self, failed: str) -> None:
        """Forget ``failed`` here and in Redis, but only where it is still the stored value."""
        self._rejected.append(failed)
        if self._copy is not None and self._copy.value == failed:
            self._copy = None
        try:
            await _RELEASE(self._redis, [self.key], [failed])
        except _REDIS_DOWN:
            log.warning("redis unreachable; could not invalidate the cached token", extra=self._x)

    async def drain(self) -> None:
        """Wait for a background refresh-ahead, if any (for shutdown and tests)."""
        if self._ahead is not None:
            await asyncio.gather(self._ahead, return_exceptions=True)

    async def aclose(self) -> None:
        for task in (self._load, self._ahead):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @property
    def _x(self) -> dict[str, str]:
        return {"app": self._label}

    # -- loading ---------------------------------------------------------------------------

    async def _load_token(self) -> str:
        try:
            return await self._load_shared()
        except _REDIS_DOWN:
            log.warning("redis unreachable; fetching the token in-process", extra=self._x)
            token, expires_in = await self._fetch_with_backoff()
            TOKEN_REFRESHES.labels(self._label, "direct").inc()
            return self._adopt(token, self._ttl(expires_in))

    async def _load_shared(self) -> str:
        deadline = self._clock() + self.wait_timeout
        delay = 0.02
        while True:
            value, remaining = await self._read()
            if value is not None:
                return self._adopt(value, remaining)
            owner = secrets.token_hex(16)
            if await self._redis.set(self.lock_key, owner, nx=True, px=self._ms(self.lock_ttl)):
                return await self._refresh_locked(owner, reason="miss")
            if self._clock() >= deadline:
                raise WeComUnavailableError(
                    "gettoken", "timed out waiting for another replica to refresh the token"
                )
            await self._sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.5)

    async def _refresh_locked(self, owner: str, *, reason: str, stale: str | None = None) -> str:
        """Holding the lock: re-check Redis, else fetch and store. Releases the lock."""
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lock(owner, done))
        try:
            value, remaining = await self._read()
            if value is not None and value != stale and remaining > self.refresh_ahead:
                return self._adopt(value, remaining)
            token, expires_in = await self._fetch_with_backoff()
            TOKEN_REFRESHES.labels(self._label, reason).inc()
            ttl = self._ttl(expires_in)
            try:
                await self._redis.set(self.key, token, px=self._ms(ttl))
            except _REDIS_DOWN:
                log.warning("redis unreachable; token kept in-process only", extra=self._x)
            return self._adopt(token, ttl)
        finally:
            done.set()  # the keeper also stops on this: Python 3.11 can lose the cancel below
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            with contextlib.suppress(*_REDIS_DOWN):  # else the lock expires after lock_ttl
                await _RELEASE(self._redis, [self.lock_key], [owner])

    async def _keep_lock(self, owner: str, done: asyncio.Event) -> None:
        # Real time on purpose: the lock's PX runs on Redis's clock, not on an injected one.
        # ``done`` ends the loop even when its cancel was lost inside redis-py's wait_for.
        while not done.is_set():
            await asyncio.sleep(self.lock_ttl / 3)
            if done.is_set():
                return
            if not await _EXTEND(self._redis, [self.lock_key], [owner, self._ms(self.lock_ttl)]):
                log.warning("lost the token refresh lock while fetching", extra=self._x)
                return

    async def _read(self) -> tuple[str | None, float]:
        """The stored token and its remaining seconds; a token we saw fail counts as absent."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.key)
            pipe.pttl(self.key)
            raw, pttl = await pipe.execute()
        if raw is None:
            return None, 0.0
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        if value in self._rejected:
            await _RELEASE(self._redis, [self.key], [value])
            return None, 0.0
        # pttl -1 (no TTL, set by hand) gets one second, so a refresh-ahead repairs it soon.
        return value, (pttl / 1000 if pttl > 0 else 1.0)

    def _adopt(self, value: str, remaining: float) -> str:
        now = self._clock()
        self._copy = _Copy(value, now + remaining, now + remaining - self.refresh_ahead)
        if now >= self._copy.refresh_at:
            self._start_refresh_ahead(value)
        return value

    # -- refresh ahead ---------------------------------------------------------------------

    def _start_refresh_ahead(self, current: str) -> None:
        # At most one attempt per token per process: if WeCom hands back the same token with a
        # short expires_in, replicas must not keep calling gettoken until it expires.
        if self._ahead_tried == current or (self._ahead is not None and not self._ahead.done()):
            return
        self._ahead_tried = current
        self._ahead = asyncio.create_task(self._refresh_ahead(current))
        self._ahead.add_done_callback(_consume)

    async def _refresh_ahead(self, current: str) -> None:
        try:
            try:
                value, remaining = await self._read()
                if value is not None and value != current and remaining > self.refresh_ahead:
                    self._adopt(value, remaining)
                    return
                owner = secrets.token_hex(16)
                if not await self._redis.set(
                    self.lock_key, owner, nx=True, px=self._ms(self.lock_ttl)
                ):
                    return  # another replica is refreshing; keep using the current token
            except _REDIS_DOWN:
                token, expires_in = await self._fetch_with_backoff()
                TOKEN_REFRESHES.labels(self._label, "direct").inc()
                self._adopt(token, self._ttl(expires_in))
                return
            await self._refresh_locked(owner, reason="ahead", stale=current)
        except Exception:
            # The current token is still valid; a cold load takes over when it expires.
            log.warning("token refresh-ahead failed", exc_info=True, extra=self._x)

    # -- gettoken with backoff -------------------------------------------------------------

    async def _fetch_with_backoff(self) -> tuple[str, int]:
        """gettoken, retrying transient failures with backoff until ``retry_budget`` is spent."""
        deadline = self._clock() + self.retry_budget
        while True:
            error: WeComUnavailableError | RetryableAPIError | RateLimitedError
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    token, expires_in = await self._fetch()
            except TimeoutError:
                error = WeComUnavailableError("gettoken", "no answer within attempt_timeout")
            except (WeComUnavailableError, RetryableAPIError, RateLimitedError) as exc:
                error = exc
            except Exception as exc:
                self._note_failure(exc)  # bad secret, untrusted IP...: retrying cannot help
                raise
            else:
                GETTOKEN_CALLS.labels(self._label, "ok").inc()
                self._failures, self._not_before, self._last_error = 0, 0.0, None
                return token, expires_in
            delay = self._note_failure(error, at_least=error.retry_after or 0.0)
            if self._clock() + delay > deadline:
                raise error
            await self._sleep(delay)

    def _note_failure(self, exc: BaseException, *, at_least: float = 0.0) -> float:
        """Count a failed gettoken; fail fast in ``get()`` until the returned delay has passed."""
        GETTOKEN_CALLS.labels(self._label, "error").inc()
        self._failures += 1
        nominal = min(self.backoff_cap, self.backoff_base * 2.0 ** (self._failures - 1))
        # "Equal jitter": never below half the nominal delay, so the call rate stays bounded.
        delay = max(nominal / 2 + random.uniform(0, nominal / 2), at_least)
        self._last_error = exc
        self._not_before = self._clock() + delay
        log.warning(
            "gettoken failed (%s); next try in %.1fs", type(exc).__name__, delay, extra=self._x
        )
        return delay

    def _ttl(self, expires_in: float) -> float:
        return max(expires_in - self.margin, expires_in / 2, 1.0)

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(int(seconds * 1000), 1)


def _consume(task: asyncio.Task[Any]) -> None:
    # Retrieve the outcome so asyncio never reports "exception was never retrieved".
    if not task.cancelled():
        task.exception()
