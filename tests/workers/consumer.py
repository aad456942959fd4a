"""A consumer process for the worker tests (run with ``sys.executable``, never imported).

``python tests/workers/consumer.py REDIS_URL --stream S --group G --log L --out O [...]``

Its handler appends ``start <id> <delivery>`` to the list ``L``, sleeps ``--sleep`` seconds,
appends ``end <id>``, and outputs ``{"id": <entry id>, "data": <data>}`` to stream ``O``. On exit
after a graceful stop it appends ``exited``. SIGTERM/SIGINT stop it the way a service stops.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from shared.bus.delivery import Delivery, Output
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer, install_signal_handlers


async def main(args: argparse.Namespace) -> None:
    redis: Redis = Redis.from_url(args.redis_url)

    async def handler(delivery: Delivery) -> Sequence[Output]:
        await redis.rpush(args.log, f"start {delivery.entry_id} {delivery.delivery_count}")
        await asyncio.sleep(args.sleep)
        await redis.rpush(args.log, f"end {delivery.entry_id}")
        return [Output(args.out, {"id": delivery.entry_id, "data": delivery.fields[b"data"]})]

    consumer = Consumer(
        redis,
        stream=args.stream,
        group=args.group,
        handler=handler,
        options=ConsumerOptions(
            name=args.name,
            concurrency=args.concurrency,
            batch=args.concurrency,
            block_ms=200,
            claim_idle=args.claim_idle_ms / 1000,
            handler_timeout=args.sleep + 5,
            drain_timeout=args.drain_timeout,
            start="backlog",
        ),
    )
    install_signal_handlers(consumer)
    await consumer.run()
    await redis.rpush(args.log, "exited")
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--claim-idle-ms", type=int, default=15_000)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
