"""Running a consumer service: the consumer loop and its small HTTP server in one event loop.

SIGTERM/SIGINT stop the consumer (it drains in-flight work within ``BUS_DRAIN_TIMEOUT``);
the HTTP server keeps answering /healthz meanwhile and stops last. A router's startup hooks run
before the consumer starts and its shutdown hooks after it drained (``lifespan``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import Any, Literal

import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from shared.bus.delivery import Handler
from shared.bus.options import ConsumerOptions
from shared.bus.router import Router, State
from shared.bus.worker import Consumer, install_signal_handlers
from shared.config import Settings

__all__ = ["Background", "lifespan", "make_consumer", "run_async", "serve_consumer"]

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def make_consumer(
    settings: Settings,
    redis: Redis,
    *,
    stream: str,
    group: str,
    handler: Handler,
    start: Literal["new", "backlog"],
) -> Consumer:
    """A Consumer with the BUS_* settings every consumer service shares."""
    options = ConsumerOptions.from_settings(settings, start=start)
    return Consumer(redis, stream=stream, group=group, handler=handler, options=options)


@contextlib.asynccontextmanager
async def lifespan(router: Router, state: State) -> AsyncIterator[State]:
    """Run ``router``'s startup hooks, yield ``state``, then its shutdown hooks.

    Use it around building and running the consumer, so hooks run before the first event and
    after the drain. A startup hook that raises stops the service before anything is consumed.
    """
    await router.startup(state)
    try:
        yield state
    finally:
        await router.shutdown(state)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The consumer owns SIGTERM: it drains first, then we stop the HTTP server ourselves.
        yield


async def serve_consumer(
    consumer: Consumer,
    app: Starlette,
    *,
    host: str,
    port: int,
    background: Sequence[Background] = (),
) -> None:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _Server(config)
    install_signal_handlers(consumer)
    stop = asyncio.Event()
    http = asyncio.create_task(server.serve())
    extras = [asyncio.create_task(task(stop)) for task in background]
    try:
        await consumer.run()
    finally:
        stop.set()
        await asyncio.gather(*extras, return_exceptions=True)
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
