"""Whole-system measurements: end-to-end latency at fixed rates, consumer throughput with one
and two processes, gettoken calls at a cold start, and the RSS of each idle service.

Every service is a real ``wecom-bus`` process started by ``tests.system.running_system`` on one
Redis (appendfsync everysec), nothing pinned; how an end-to-end run is driven and measured is
``bench.e2e``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import redis

from bench import e2e
from bench.callbacks import Credentials, event_entries, outbox_entries
from bench.ingress import baseline_at_rates, baseline_cpu_ms
from bench.plan import QUICK, Context
from bench.procs import cores, rss_mb
from devkit.embedded_redis import EmbeddedRedis, free_port
from shared.bus import names
from tests.system import System

__all__ = ["ALL", "consumer_system", "fill_for", "profiled_system", "run_pipeline"]

ALL = ("fake-wecom", "ingress", "responder", "sender")


@contextlib.contextmanager
def _system(
    ctx: Context, rds: EmbeddedRedis, services: tuple[str, ...], name: str
) -> Iterator[System]:
    with e2e.system(ctx, rds.url, [rds], services, name) as system:
        yield system


def _spawn(system: System, service: str, label: str) -> None:
    port = free_port()
    system.stack.spawn(service, "--host", "127.0.0.1", "--port", str(port), label=label)
    system.stack.wait_ready({label: f"http://127.0.0.1:{port}/readyz"}, timeout=60)


# ------------------------------------------------------------------ end to end


def _end_to_end(ctx: Context, rds: EmbeddedRedis, log: Callable[[str], None]) -> dict[str, Any]:
    with _system(ctx, rds, ALL, "e2e") as system:
        rss = {name: rss_mb(p.pid) for name, p in system.stack.children}
        creds = Credentials.from_env(system.env)
        e2e.warm_up(ctx, system, creds)
        rates: list[dict[str, Any]] = []
        first, expected = 0, e2e.sends(system)
        for rate in ctx.plan.e2e_rates:
            # A backlog left by a rate that was not sustained would be counted against the next.
            if not e2e.wait(partial(e2e.sent_at_least, system, expected), 60.0, system, poll=0.25):
                rates.append({"rate": rate, "skipped": "the backlog of a lower rate never drained"})
                continue
            time.sleep(0.5)
            log(f"  end to end at {rate} msg/s …")
            duration = ctx.plan.e2e_duration
            rates.append(e2e.e2e_rate(ctx, system, [rds], creds, rate, first, duration))
            first += int(rate * duration)
            expected += rates[-1]["sent"]
    return {"rss_mb_idle": rss, "rates": rates}


# ------------------------------------------------------------------ consumers


def _drained(client: redis.Redis, stream: str, group: str) -> bool:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == group:
            return bool(info["pending"] == 0 and info.get("lag") == 0)
    return False


def _fill(client: redis.Redis, stream: str, entries: Iterator[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    n = 0
    for data in entries:
        pipe.xadd(stream, {"data": data})
        n += 1
    pipe.execute()
    return n


def _drain_rate(
    ctx: Context,
    system: System,
    rds: EmbeddedRedis,
    stream: str,
    group: str,
    entries: Any,
) -> dict[str, Any]:
    client = redis.Redis(port=rds.port)
    cpu0 = e2e.cpu(system, [rds])
    started = time.perf_counter()
    n = _fill(client, stream, entries)
    filled = time.perf_counter() - started
    ok = e2e.wait(lambda: _drained(client, stream, group), 120.0, system, poll=0.01)
    took = time.perf_counter() - started
    cpu = e2e.cpu_ms_per(cpu0, e2e.cpu(system, [rds]), n)
    client.close()
    return {
        "cpu_ms_per_entry": cpu,
        "entries": n,
        "seconds": round(took, 3),
        "fill_seconds": round(filled, 3),
        "per_second": round(n / took, 1) if ok else 0.0,
        "drained": ok,
    }


def _consumers(ctx: Context, rds: EmbeddedRedis, log: Callable[[str], None]) -> dict[str, Any]:
    n = ctx.plan.consumer_entries
    out: dict[str, Any] = {"responder": {}, "sender": {}}
    client = redis.Redis(port=rds.port)
    log("  responder events/s with one and two processes …")
    with _system(ctx, rds, ("responder",), "responder") as system:
        creds = Credentials.from_env(system.env)
        events, group = names.events(), names.RESPONDER_GROUP
        out["responder"]["1"] = _drain_rate(
            ctx, system, rds, events, group, event_entries(creds, n, ctx.plan.e2e_members)
        )
        _spawn(system, "responder", "responder-2")
        out["responder"]["2"] = _drain_rate(
            ctx, system, rds, events, group, event_entries(creds, n, ctx.plan.e2e_members)
        )
    log("  sender sends/s with one and two processes …")
    with _system(ctx, rds, ("fake-wecom", "sender"), "sender") as system:
        outbox, group = names.outbox(), names.SENDER_GROUP
        _fill(client, outbox, outbox_entries(20, ctx.plan.e2e_members, tag="warm"))
        e2e.wait(lambda: _drained(client, outbox, group), 30.0, system)
        out["sender"]["1"] = _drain_rate(
            ctx, system, rds, outbox, group, outbox_entries(n, ctx.plan.e2e_members, tag="a")
        )
        _spawn(system, "sender", "sender-2")
        out["sender"]["2"] = _drain_rate(
            ctx, system, rds, outbox, group, outbox_entries(n, ctx.plan.e2e_members, tag="b")
        )
        out["sender"]["fake_stats"] = system.fake("GET", "/fake/stats")
    for kind in ("responder", "sender"):
        one, two = out[kind]["1"]["per_second"], out[kind]["2"]["per_second"]
        out[kind]["ratio_2_to_1"] = round(two / one, 3) if one else 0.0
    client.close()
    return out


@contextlib.contextmanager
def profiled_system(
    workdir: Path, services: tuple[str, ...], members: int = QUICK.e2e_members
) -> Iterator[tuple[System, EmbeddedRedis]]:
    """A Redis and ``services`` as real processes, for profiling."""
    ctx = Context(
        plan=msgspec.structs.replace(QUICK, e2e_members=members),
        creds=Credentials.generate(),
        workdir=workdir,
        cores=cores(),
        requests_file=workdir / "unused",
    )
    with (
        EmbeddedRedis(appendfsync="everysec") as rds,
        _system(ctx, rds, services, "-".join(services)) as system,
    ):
        yield system, rds


def consumer_system(workdir: Path, service: str) -> contextlib.AbstractContextManager[Any]:
    """A Redis and one consumer service (and the fake WeCom for the sender), for profiling."""
    return profiled_system(workdir, ("fake-wecom", "sender") if service == "sender" else (service,))


def fill_for(system: System, rds: EmbeddedRedis, service: str, count: int) -> tuple[int, float]:
    """Pre-fill the stream ``service`` consumes with ``count`` entries; (count, seconds)."""
    client = redis.Redis(port=rds.port)
    started = time.perf_counter()
    if service == "sender":
        n = _fill(client, names.outbox(), outbox_entries(count, tag="profile"))
    else:
        creds = Credentials.from_env(system.env)
        n = _fill(client, names.events(), event_entries(creds, count))
    client.close()
    return n, time.perf_counter() - started


# ------------------------------------------------------------------ gettoken at a cold start


def _gettoken(ctx: Context, rds: EmbeddedRedis) -> dict[str, Any]:
    n, senders = ctx.plan.gettoken_sends, ctx.plan.gettoken_senders
    client = redis.Redis(port=rds.port)
    with _system(ctx, rds, ("fake-wecom",), "gettoken") as system:
        _fill(client, names.outbox(), outbox_entries(n, ctx.plan.e2e_members, tag="cold"))
        started = time.perf_counter()
        ports = [free_port() for _ in range(senders)]
        for i, port in enumerate(ports):  # all start at once, no token anywhere yet
            system.stack.spawn("sender", "--host", "127.0.0.1", "--port", str(port), label=f"s{i}")

        def sent() -> bool:
            return int(system.fake("GET", "/fake/stats")["sends"]) >= n

        ok = e2e.wait(sent, 60.0, system, poll=0.1)
        took = time.perf_counter() - started
        stats = system.fake("GET", "/fake/stats")
    client.close()
    return {
        "senders": senders,
        "sends": n,
        "delivered": stats["sends"],
        "all_sent": ok,
        "seconds_from_spawn": round(took, 2),
        "gettoken_calls": sum(stats["gettoken"].values()),
        "gettoken_failures": stats["gettoken_failures"],
    }


def run_pipeline(ctx: Context, log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {}
    baseline = ctx.results.get("ingress", {}).get("baseline_cpu_ms")
    if baseline is None:  # --only pipeline: the unit is measured in this run all the same
        log("  verify+decrypt baseline (plain ASGI, one core) …")
        baseline = baseline_cpu_ms(ctx)
    out["baseline_cpu_ms"] = baseline
    log("  verify+decrypt baseline at each end-to-end rate (plain ASGI, open loop) …")
    # JSON keys are strings: the rate as text.
    at_rate = baseline_at_rates(ctx, ctx.plan.e2e_rates)
    out["baseline_at_rate_cpu_ms"] = {str(rate): ms for rate, ms in at_rate.items()}
    with EmbeddedRedis(appendfsync="everysec") as rds:
        out["e2e"] = _end_to_end(ctx, rds, log)
        out["consumers"] = _consumers(ctx, rds, log)
        log("  gettoken at a cold start …")
        out["gettoken"] = _gettoken(ctx, rds)
    return out
