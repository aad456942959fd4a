"""``python -m bench.sender_cpu``: the sender's CPU per send, the sender alone.

A Redis, the fake WeCom and one sender as real processes (as ``python -m bench --only
pipeline``'s consumer drain runs them); the outbox is pre-filled with one text per member in
turn and drained, ``--rounds`` times. It prints the median (and every round's) CPU per send of
the sender and of Redis, read from ``/proc`` like every other CPU figure here, and, steadier
than CPU on a shared machine, the script calls and socket reads Redis served per send (its
``INFO``; the bench's own fill and polls are among them). Drained from a
full outbox the sends finish in larger groups than at a fixed rate, so the figures are lower
than end to end at 1,000 a second; they are for comparing one change with the next.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import redis

from bench.callbacks import Credentials, outbox_entries
from bench.e2e import wait
from bench.pipeline import _drain_rate, _drained, _fill, _system
from bench.plan import QUICK, Context
from bench.procs import cores
from devkit.embedded_redis import EmbeddedRedis
from shared.bus import names

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sender_cpu", description=__doc__)
    parser.add_argument("--entries", type=int, default=3000, help="sends per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="wecom-bus-sender-cpu-"))
    ctx = Context(
        plan=QUICK,
        creds=Credentials.generate(),
        workdir=workdir,
        cores=cores(),
        requests_file=workdir / "unused",
    )
    members = ctx.plan.e2e_members
    rounds: list[dict[str, float]] = []
    with (
        EmbeddedRedis(appendfsync="everysec") as rds,
        _system(ctx, rds, ("fake-wecom", "sender"), "sender") as system,
    ):
        client = redis.Redis(port=rds.port)
        outbox, group = names.outbox(), names.SENDER_GROUP
        _fill(client, outbox, outbox_entries(200, members, tag="warm"))
        wait(lambda: _drained(client, outbox, group), 60.0, system)
        for r in range(args.rounds):
            entries = outbox_entries(args.entries, members, tag=f"r{r}")
            before = _served(client)
            drain = _drain_rate(ctx, system, rds, outbox, group, entries)
            if not drain["drained"]:
                raise RuntimeError(f"round {r}: the outbox was not drained")
            cpu = drain["cpu_ms_per_entry"]
            served = {
                k: round((v - before[k]) / args.entries, 2) for k, v in _served(client).items()
            }
            rounds.append({"sender": cpu["sender"], "redis": cpu["redis"], **served})
        client.close()
    result = {
        "sender_cpu_ms_per_send": statistics.median(r["sender"] for r in rounds),
        "redis_cpu_ms_per_send": statistics.median(r["redis"] for r in rounds),
        "scripts_per_send": statistics.median(r["scripts"] for r in rounds),
        "redis_reads_per_send": statistics.median(r["reads"] for r in rounds),
        "rounds": rounds,
    }
    print(msgspec.json.format(msgspec.json.encode(result)).decode())
    return 0


def _served(client: redis.Redis) -> dict[str, float]:
    """Script calls (EVALSHA and EVAL) and socket reads Redis served so far."""
    calls: Any = client.info("commandstats")
    stats: Any = client.info("stats")
    scripts = sum(calls.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    return {"scripts": float(scripts), "reads": float(stats["total_reads_processed"])}


if __name__ == "__main__":
    sys.exit(main())
