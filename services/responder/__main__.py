"""``wecom-bus responder``: run a consumer group with a router of handlers.

``--handlers pkg.module:router`` runs any team's behaviour as its own group
(``--group helpdesk``); the default is this package's responder router.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from starlette.applications import Starlette

from services.health import health_routes
from services.runtime import AnyConsumer, lifespan, make_consumer, run_async, serve_consumer
from services.serving import settle_heap
from shared import logs, tracing
from shared.bus import names
from shared.bus.router import Router, State
from shared.config import load_settings
from shared.connection import connect, prepare
from shared.errors import ConfigError

log = logging.getLogger("wecom_bus.responder")

BUILTIN_GROUPS = {names.RESPONDER_GROUP}
# A responder's handlers answer in microseconds, and a wake-up of the process for a Redis reply
# costs more CPU than that: under a steady stream of events, letting 3 ms of them gather before
# the next read (their commits go with it) serves several per read and per commit, for at most
# 6 ms more latency. Events further apart than 6 ms are read, and committed, at once.
READ_LINGER = 0.003


def load_router(spec: str) -> Router:
    """Import ``module:attribute`` and check it is a Router."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError("--handlers", f"expected module:attribute, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("--handlers", f"cannot import {module_name!r}: {exc}") from None
    router = getattr(module, attribute, None)
    if not isinstance(router, Router):
        raise ConfigError("--handlers", f"{spec!r} is not a Router")
    return router


def build_consumer(state: State, router: Router, group: str, start: str) -> AnyConsumer:
    settings = state.settings
    return make_consumer(
        settings,
        state.redis,
        stream=names.events,
        group=group,
        handler=router.handler(
            prefix=settings.prefix,
            maxlen=settings.stream_maxlen,
            state=state,
            max_deliveries=settings.max_deliveries,  # as ConsumerOptions.from_settings
        ),
        start="backlog" if start == "backlog" else "new",
        read_linger=READ_LINGER,
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure(args.group, settings.log_level, settings.log_format)
    tracing.setup(args.group)  # on only with wecom-bus[otel] and OTEL_* set
    router = load_router(args.handlers)
    url = settings.require_redis()
    # Built-in groups start at the retained backlog so nothing accepted before they first ran
    # goes unanswered; a team's new group starts at new entries unless asked.
    start = args.start or ("backlog" if args.group in BUILTIN_GROUPS else "new")

    async def main() -> None:
        redis = connect(url, socket_timeout=10, socket_connect_timeout=3)
        await prepare(redis)
        state = State(settings=settings, redis=redis, environ=dict(os.environ))
        try:
            async with lifespan(router, state):
                consumer = build_consumer(state, router, args.group, start)
                log.info("consuming", extra={"group": args.group, "routes": len(router.routes)})
                if args.burst:
                    stats = await consumer.run_burst()
                    log.info("burst done", extra=stats)
                else:
                    app = Starlette(routes=health_routes(redis, lambda: consumer.healthy))
                    settle_heap()  # what was built so far lives as long as the process
                    await serve_consumer(consumer, app, host=args.host, port=args.port)
        finally:
            await redis.aclose()

    run_async(main())
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["responder", *sys.argv[1:]]))
