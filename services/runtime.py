"""Running a consumer service: the consumer loop and its small HTTP server in one event loop.

SIGTERM/SIGINT stop the consumer (it drains in-flight work within ``BUS_DRAIN_TIMEOUT``);
the HTTP server keeps answering /healthz meanwhile and stops last. A router's startup hooks run
before the consumer starts and its shutdown hooks after it drained (``lifespan``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import Any, Literal

import msgspec
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from services.serving import QuietServer, uvicorn_options
from shared.bus import metrics, names
from shared.bus.delivery import Handler
from shared.bus.options import ConsumerOptions
from shared.bus.partitioned import PartitionedConsumer
from shared.bus.router import Router, State
from shared.bus.worker import Consumer, install_signal_handlers
from shared.config import Settings
from shared.wecom.gateway import gateway_for

__all__ = [
    "AnyConsumer",
    "Background",
    "Supervisor",
    "lifespan",
    "make_consumer",
    "run_async",
    "serve_consumer",
]

log = logging.getLogger("wecom_bus.runtime")

# A background task: runs until the event is set (a scheduler, a gauge refresher…).
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Supervisor:
    """Keeps background tasks running: a task that raises (or returns before ``stop``) is
    logged with its error and restarted after a capped, jittered backoff. ``healthy`` is
    False while any task waits to be restarted; put it in the service's ``/readyz``.

    So no background work can die silently: not on a Redis script error, OOM, MASTERDOWN, nor
    on a bug. ``wecom_background_task_up{task}`` and ``…_restarts_total`` show it too.
    """

    def __init__(self, *, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> None:
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._down: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def healthy(self) -> bool:
        return not self._down

    @property
    def down(self) -> frozenset[str]:
        """Names of the tasks waiting to be restarted."""
        return frozenset(self._down)

    def start(self, task: Background, stop: asyncio.Event, name: str | None = None) -> None:
        """Run ``task(stop)`` under supervision until ``stop`` is set (see :meth:`wait`)."""
        label: str = name or getattr(task, "__name__", None) or repr(task)
        self._tasks.append(asyncio.create_task(self._keep(label, task, stop), name=label))

    async def wait(self) -> None:
        """Wait for every supervised task to end (set their ``stop`` first)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep(self, name: str, task: Background, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            self._down.discard(name)
            metrics.BACKGROUND_UP.labels(name).set(1)
            started = loop.time()
            try:
                await task(stop)
                if stop.is_set():
                    break
                log.error("background task ended by itself; restarting", extra={"task": name})
            except Exception as exc:
                log.error("background task failed; restarting", exc_info=exc, extra={"task": name})
            failures = 1 if loop.time() - started > self.backoff_cap else failures + 1
            self._down.add(name)
            metrics.BACKGROUND_UP.labels(name).set(0)
            metrics.BACKGROUND_RESTARTS.labels(name).inc()
            pause = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause * random.uniform(0.5, 1.0))
        self._down.discard(name)


AnyConsumer = Consumer | PartitionedConsumer


def make_consumer(
    settings: Settings,
    redis: Redis,
    *,
    stream: Callable[[str], str],
    group: str,
    handler: Handler,
    start: Literal["new", "backlog"],
    concurrency: int | None = None,
    read_linger: float = 0.0,
) -> AnyConsumer:
    """A consumer of ``stream`` (``names.events`` or ``names.outbox``) in every partition, with
    the BUS_* settings every consumer service shares (and ``concurrency`` deliveries at once
    instead of the default, for a service whose handler mostly waits; split over the
    partitions; ``read_linger``: see ``ConsumerOptions``); one partition: a plain Consumer."""
    options = ConsumerOptions.from_settings(settings, start=start, read_linger=read_linger)
    if concurrency is not None:
        options = msgspec.structs.replace(options, concurrency=concurrency)
    streams = [stream(p) for p in names.partitions(settings.prefix, settings.partitions)]
    if len(streams) == 1:
        return Consumer(redis, stream=streams[0], group=group, handler=handler, options=options)
    return PartitionedConsumer(
        redis, streams=streams, group=group, handler=handler, options=options
    )


@contextlib.asynccontextmanager
async def lifespan(router: Router, state: State) -> AsyncIterator[State]:
    """Run ``router``'s startup hooks, yield ``state``, then its shutdown hooks.

    Use it around building and running the consumer, so hooks run before the first event and
    after the drain. A startup hook that raises stops the service before anything is consumed.
    """
    async with gateway_for(state):  # ctx.wecom: one client for the process
        await router.startup(state)
        try:
            yield state
        finally:
            await router.shutdown(state)


class _Server(QuietServer):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The consumer owns SIGTERM: it drains first, then we stop the HTTP server ourselves.
        yield


async def serve_consumer(
    consumer: AnyConsumer,
    app: Starlette,
    *,
    host: str,
    port: int,
    background: Sequence[Background] = (),
    supervisor: Supervisor | None = None,
) -> None:
    """Serve ``app`` while ``consumer`` runs; ``background`` tasks run under ``supervisor``
    (pass the one whose ``healthy`` the app's /readyz checks)."""
    config = uvicorn.Config(app, host=host, port=port, **uvicorn_options(lifespan="off"))
    server = _Server(config)
    install_signal_handlers(consumer)
    stop = asyncio.Event()
    http = asyncio.create_task(server.serve())
    supervisor = supervisor if supervisor is not None else Supervisor()
    for task in background:
        supervisor.start(task, stop)
    try:
        await consumer.run()
    finally:
        stop.set()
        await supervisor.wait()
        server.should_exit = True
        await http


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
