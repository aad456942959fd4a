"""``ConsumerOptions``: how a consumer reads, claims, times out and trims, in one typed object.

Its defaults are the settings' defaults (``shared.config.Settings``), so a consumer built in a
test, a benchmark or a service agrees with ``BUS_*`` unless told otherwise; services build it
with :meth:`ConsumerOptions.from_settings`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.config import Settings

__all__ = ["ConsumerOptions"]

_SETTINGS = Settings()  # the one source of the BUS_* defaults


class ConsumerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything but the stream, the group and the handler; every field has a default.

    * ``concurrency``: deliveries running at once; no more are read than can start at once
      (an entry waiting in memory would age towards ``claim_idle`` and be claimed elsewhere).
    * ``batch``, ``block_ms``: XREADGROUP COUNT and BLOCK.
    * ``claim_idle`` (s, ``BUS_CLAIM_IDLE``): an entry idle this long is taken over by another
      replica. A running handler's lease is extended every ``claim_idle / 3``, so this is the
      crash-takeover time, not a bound on handler run time.
    * ``handler_timeout`` (s, ``BUS_HANDLER_TIMEOUT``): a handler running longer fails.
    * ``max_deliveries`` (``BUS_MAX_DELIVERIES``): the delivery that fails for this many times
      goes to the dead letter.
    * ``start``: where a group this consumer creates begins, "new" or "backlog".
    * ``dead_consumer_idle`` (s): consumers of the group idle that long with nothing pending
      are deleted.
    * ``prefix`` (``BUS_PREFIX``): for the dead-letter stream's name.
    * ``drain_timeout`` (s, ``BUS_DRAIN_TIMEOUT``): what in-flight work gets on stop.
    * ``maxlen`` (``BUS_STREAM_MAXLEN``): ``MAXLEN ~`` of outputs and dead letters (None: never).
    * ``housekeeping_interval`` (s): group metrics and the idle-consumer sweep.
    * ``name``: the consumer's name in the group; default host-pid-random, unique per replica.
    * ``min_replicas``, ``min_replicas_timeout`` (ms) (``BUS_MIN_REPLICAS…``): a commit WAITs
      for that many replicas (0: no WAIT).
    * ``order_wait`` (s, ``BUS_ORDER_WAIT``): how long entry n of a member waits for n-1 to be
      committed (``shared.bus.ordering``; 0: never waits).
    * ``read_linger`` (s): after a read that returned some entries but fewer than it could
      take, wait this long before the next one, so that reads and commits serve several
      entries each under a steady trickle (every wake-up of the process costs more CPU than
      handling a message); the commits of those entries wait for that next read and go with
      it. Adds at most twice that much latency, and nothing while entries arrive further
      apart than twice the linger: then the reader reads again at once (``shared.bus.linger``).
      0: read again at once.
    """

    concurrency: int = 16
    batch: int = 32
    block_ms: int = 1000
    claim_idle: float = _SETTINGS.claim_idle
    handler_timeout: float = _SETTINGS.handler_timeout
    max_deliveries: int = _SETTINGS.max_deliveries
    start: Literal["new", "backlog"] = "new"
    dead_consumer_idle: float = 3600.0
    prefix: str = _SETTINGS.prefix
    drain_timeout: float = _SETTINGS.drain_timeout
    maxlen: int | None = _SETTINGS.stream_maxlen
    housekeeping_interval: float = 5.0
    name: str | None = None
    min_replicas: int = 0
    min_replicas_timeout: int = 1000
    order_wait: float = _SETTINGS.order_wait
    read_linger: float = 0.0

    def __post_init__(self) -> None:
        if min(self.concurrency, self.batch, self.max_deliveries, self.block_ms) < 1:
            raise ValueError("concurrency, batch, max_deliveries and block_ms must be >= 1")
        if min(self.claim_idle, self.handler_timeout, self.housekeeping_interval) <= 0:
            raise ValueError("claim_idle, handler_timeout and housekeeping_interval must be > 0")
        if not 0 <= self.read_linger <= 1:
            raise ValueError("read_linger must be between 0 and 1 s")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ConsumerOptions:
        """The options the ``BUS_*`` settings give, with ``overrides`` on top."""
        return cls(
            **{
                "claim_idle": settings.claim_idle,
                "handler_timeout": settings.handler_timeout,
                "max_deliveries": settings.max_deliveries,
                "prefix": settings.prefix,
                "drain_timeout": settings.drain_timeout,
                "maxlen": settings.stream_maxlen,
                "min_replicas": settings.min_replicas,
                "min_replicas_timeout": settings.min_replicas_timeout,
                "order_wait": settings.order_wait,
                **overrides,
            }
        )

    @property
    def wait(self) -> tuple[int, int] | None:
        """WAIT's arguments after a commit, or None."""
        return (self.min_replicas, self.min_replicas_timeout) if self.min_replicas else None

    @property
    def claim_idle_ms(self) -> int:
        return max(int(self.claim_idle * 1000), 1)

    @property
    def lease_interval(self) -> float:
        """How often running entries' leases are extended: three times per claim window."""
        return self.claim_idle / 3
