"""``wecom-bus sender``: the outbox consumer, the token owner and the internal send API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from services.runtime import (
    AnyConsumer,
    Background,
    Supervisor,
    make_consumer,
    run_async,
    serve_consumer,
)
from services.sender.actions import ActionHandler
from services.sender.api import create_api
from services.sender.handler import OutboxHandler, show_circuit
from services.sender.metrics import DELAYED
from services.serving import settle_heap
from shared import logs, tracing
from shared.bus import delayed, names
from shared.bus.tally import Tally
from shared.config import AppSettings, Settings, load_settings
from shared.connection import connect, prepare
from shared.wecom import circuit
from shared.wecom.client import DEFAULT_LIMITS, TokenFetcher, WeComClient, wecom_transport
from shared.wecom.governor import Governor
from shared.wecom.token import TokenCache

# A send mostly waits (Redis, then WeCom, then Redis): as many in flight as the client's
# connection pool holds, so a replica carries 1,000 sends a second even at 50 ms a send, and
# the Redis work of sends finishing together shares round trips.
SENDS_IN_FLIGHT = DEFAULT_LIMITS.max_connections or 64


def make_clients(settings: Settings, redis: Redis) -> dict[str, WeComClient]:
    """One client and one shared token cache per app (a token belongs to an app)."""

    def tokens(app: AppSettings) -> Callable[[TokenFetcher], TokenCache]:
        def factory(fetch: TokenFetcher) -> TokenCache:
            return TokenCache(
                redis,
                fetch,
                corp_id=app.corp_id,
                agent_id=app.agent_id,
                prefix=settings.prefix,
                name=app.name,
            )

        return factory

    return {
        name: WeComClient(
            app, token_source=tokens(app), base_url=settings.api_base, proxy=settings.wecom_proxy
        )
        for name, app in settings.apps.items()
    }


def schedulers(settings: Settings, redis: Redis) -> list[Background]:
    """One delayed-queue mover per partition, each into its own partition's outbox."""

    def mover(part: str, index: int) -> Background:
        async def task(stop: asyncio.Event) -> None:
            await delayed.run_scheduler(
                redis, part, names.outbox(part), stop=stop, maxlen=settings.stream_maxlen
            )

        task.__name__ = "scheduler" if settings.partitions == 1 else f"scheduler-{index}"
        return task

    return [
        mover(p, i) for i, p in enumerate(names.partitions(settings.prefix, settings.partitions))
    ]


def build(
    settings: Settings,
    redis: Redis,
    clients: dict[str, WeComClient],
    http: httpx.AsyncClient | None = None,
    tally: Tally | None = None,
) -> AnyConsumer:
    """The outbox consumer; ``http`` posts AI-bot responses (no ``http``: no bot responses)."""
    # margin: WeCom counts when a request arrives, not when we admitted it.
    governor = Governor(
        redis, prefix=settings.prefix, daily_quota=settings.sender_daily_quota, margin=1.0
    )
    handler = OutboxHandler(
        redis,
        prefix=settings.prefix,
        clients=clients,
        governor=governor,
        rate_limited_waits=(settings.sender_rate_limited_wait, 3600.0),
        probe_interval=settings.sender_circuit_probe,
        duplicate_check=settings.sender_duplicate_check,
        max_deliveries=settings.max_deliveries,
        wait=(settings.min_replicas, settings.min_replicas_timeout)
        if settings.min_replicas
        else None,
        tally=tally,
    )
    if http is not None:
        handler.actions = ActionHandler(
            redis,
            prefix=settings.prefix,
            clients=clients,
            http=http,
            api_base=settings.api_base,
            backoff=handler.backoff,
            max_deliveries=settings.max_deliveries,
        )
    return make_consumer(
        settings,
        redis,
        stream=names.outbox,
        group=names.SENDER_GROUP,
        handler=handler,
        start="backlog",  # a request enqueued before the first sender ever ran is still sent
        concurrency=SENDS_IN_FLIGHT,
    )


def observer(settings: Settings, redis: Redis, apps: list[str], every: float = 5.0) -> Background:
    """The delayed queue's size and each app's circuit (another replica may have changed one)
    into the gauges, every ``every`` seconds. A Redis failure ends the task: the Supervisor
    logs it, marks it down (``/readyz``, ``wecom_background_task_up``) and restarts it."""

    async def observe(stop: asyncio.Event) -> None:
        parts = names.partitions(settings.prefix, settings.partitions)
        while not stop.is_set():
            DELAYED.set(sum([await delayed.size(redis, p) for p in parts]))
            for name in apps:
                state = await circuit.read(redis, settings.prefix, name)
                show_circuit(name, state.state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    return observe


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure("sender", settings.log_level, settings.log_format)
    tracing.setup("sender")  # on only with wecom-bus[otel] and OTEL_* set
    settings.require("secret")
    url = settings.require_redis()

    async def main() -> None:
        redis = connect(url, socket_timeout=10, socket_connect_timeout=3)
        await prepare(redis)
        clients = make_clients(settings, redis)
        async with contextlib.AsyncExitStack() as stack:
            for client in clients.values():
                await stack.enter_async_context(client)
            # response_url replies of AI bots: WeCom's host too, so through the same proxy
            transport = wecom_transport(DEFAULT_LIMITS, settings.wecom_proxy)
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
            tally = Tally("sends")
            consumer = build(settings, redis, clients, http, tally)
            supervisor = Supervisor()
            app = create_api(
                settings,
                redis,
                clients=clients,
                ready=lambda: consumer.healthy and supervisor.healthy,
            )

            observe = observer(settings, redis, list(clients))

            async def counters(stop: asyncio.Event) -> None:  # for the console, every 5 s
                await tally.run(redis, settings.prefix, stop)

            settle_heap()  # what was built so far lives as long as the process
            await serve_consumer(
                consumer,
                app,
                host=args.host,
                port=args.port,
                background=[*schedulers(settings, redis), observe, counters],
                supervisor=supervisor,
            )
        await redis.aclose()

    run_async(main())
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["sender", *sys.argv[1:]]))
