"""Whole-system measurements: end-to-end latency at fixed rates, consumer throughput with one
and two processes, gettoken calls at a cold start, and the RSS of each idle service.

Every service is a real ``wecom-bus`` process started by ``tests.system.running_system`` on one
Redis (appendfsync everysec), nothing pinned. The fake WeCom knows ``e2e_members`` members so
that its 30-a-minute limit per member never binds. End-to-end callbacks are signed with the
app's Token and EncodingAESKey and sent by the load generator straight to the ingress (not
through ``/fake/callbacks``, which would make the fake the generator); the latency of one
message is the fake's receipt time of its message/send minus the wall time its callback was
sent.
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

from bench.callbacks import (
    Credentials,
    callback_requests,
    content_index,
    event_entries,
    members,
    outbox_entries,
    save_requests,
)
from bench.loadgen import LoadConfig, cpu_seconds, percentiles, run_load
from bench.plan import QUICK, Context
from bench.procs import cores, rss_mb
from devkit.embedded_redis import EmbeddedRedis, free_port
from shared.bus import names
from tests.system import System, running_system

__all__ = ["ALL", "consumer_system", "fill_for", "profiled_system", "run_pipeline"]

ALL = ("fake-wecom", "ingress", "responder", "sender")
END_TO_END = ("ingress", "responder", "sender", "redis")  # what a message costs; not the fake


@contextlib.contextmanager
def _system(
    ctx: Context, rds: EmbeddedRedis, services: tuple[str, ...], name: str
) -> Iterator[System]:
    client = redis.Redis(port=rds.port)
    client.flushall()
    client.close()
    log_dir = ctx.workdir / name
    log_dir.mkdir(exist_ok=True)
    env = {"FAKE_WECOM_MEMBERS": ",".join(members(ctx.plan.e2e_members))}
    try:
        with running_system(rds.url, log_dir, services=services, **env) as system:
            yield system
    except Exception as exc:
        tails = "\n".join(p.read_text(errors="replace")[-600:] for p in log_dir.glob("*.log"))
        raise RuntimeError(f"{name}: {exc}\n{tails}") from exc


def _spawn(system: System, service: str, label: str) -> None:
    port = free_port()
    system.stack.spawn(service, "--host", "127.0.0.1", "--port", str(port), label=label)
    system.stack.wait_ready({label: f"http://127.0.0.1:{port}/readyz"}, timeout=60)


def _wait(
    condition: Callable[[], bool], timeout: float, system: System, poll: float = 0.02
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        system.stack.check_alive()
        time.sleep(poll)
    return False


# ------------------------------------------------------------------ end to end


def _sends(system: System) -> int:
    return int(system.fake("GET", "/fake/stats")["sends"])


def _redis_work(rds: EmbeddedRedis) -> dict[str, int]:
    """Redis's counters: commands run, and reads (≈ round trips: a pipeline arrives in one)."""
    client = redis.Redis(port=rds.port)
    stats = client.info("stats")
    client.close()
    return {k: int(stats[f"total_{k}_processed"]) for k in ("commands", "reads")}


def _sent_at_least(system: System, n: int) -> bool:
    return _sends(system) >= n


def _e2e_rate(
    ctx: Context, system: System, rds: EmbeddedRedis, creds: Credentials, rate: int, first: int
) -> dict[str, Any]:
    count = int(rate * ctx.plan.e2e_duration)
    file = ctx.workdir / f"e2e-{rate}.pkl"
    save_requests(
        callback_requests(creds, count, first_index=first, member_count=ctx.plan.e2e_members),
        file,
    )
    since = system.fake("GET", "/fake/messages", params={"since": 1 << 60})["last"]
    sends0 = _sends(system)
    redis0 = _redis_work(rds)
    cpu0 = _cpu(system, rds)
    result = run_load(
        LoadConfig(
            port=system.ports["ingress"],
            requests_file=str(file),
            mode="open",
            connections=64,
            rate=float(rate),
            warmup=0.0,
            duration=ctx.plan.e2e_duration,
            repeat=False,
            record_sends=True,
        )
    )
    sent_done = time.time()
    # The fake's counter, not its message list, while waiting: the list is long and costly.
    # CPU is counted until the last message is out: a backlog's work belongs to its messages.
    _wait(partial(_sent_at_least, system, sends0 + result.sent), 60.0, system, poll=0.1)
    cpu = _cpu_ms_per(cpu0, _cpu(system, rds), result.sent)
    redis_work = {
        k: round((v - redis0[k]) / max(1, result.sent), 2) for k, v in _redis_work(rds).items()
    }
    records: list[dict[str, Any]] = system.fake("GET", "/fake/messages", params={"since": since})[
        "messages"
    ]
    latencies, last_delivery = [], 0.0
    for record in records:
        content = ((record.get("body") or {}).get("text") or {}).get("content", "")
        index = content_index(content)
        if index is None or not 0 <= index - first < len(result.send_times):
            continue
        latencies.append(record["time"] - result.send_times[index - first])
        last_delivery = max(last_delivery, record["time"])
    stats = percentiles(latencies)
    achieved = result.sent / ctx.plan.e2e_duration
    # Sustained: everything delivered, nothing refused, the generator kept its schedule and no
    # queue built up (a growing backlog shows as seconds of latency by the end of the run).
    sustained = (
        len(latencies) == result.sent == count
        and result.errors == 0
        and result.behind_ms < 250
        and stats["p99"] < 1000
        and last_delivery - sent_done < 1.0
    )
    return {
        "rate": rate,
        "sent": result.sent,
        "delivered": len(latencies),
        "ack_errors": result.errors,
        "achieved_rate": round(achieved, 1),
        "ack_latency_ms": result.latency_ms,
        "generator_behind_ms": result.behind_ms,
        "latency_ms": stats,
        "last_delivery_after_last_send_s": round(max(0.0, last_delivery - sent_done), 3),
        "sustained": sustained,
        "cpu_ms_per_message": cpu,
        "end_to_end_cpu_ms": round(sum(cpu.get(k, 0.0) for k in END_TO_END), 3),
        "redis_per_message": redis_work,
    }


def _end_to_end(ctx: Context, rds: EmbeddedRedis, log: Callable[[str], None]) -> dict[str, Any]:
    with _system(ctx, rds, ALL, "e2e") as system:
        rss = {name: rss_mb(p.pid) for name, p in system.stack.children}
        creds = Credentials.from_env(system.env)
        warm = ctx.workdir / "e2e-warm.pkl"
        save_requests(callback_requests(creds, 40, first_index=10_000_000), warm)
        run_load(
            LoadConfig(
                port=system.ports["ingress"],
                requests_file=str(warm),
                mode="open",
                connections=8,
                rate=40.0,
                warmup=0.0,
                duration=1.0,
                repeat=False,
            )
        )
        time.sleep(1.0)  # the token is fetched and the scripts are loaded
        rates: list[dict[str, Any]] = []
        first, expected = 0, _sends(system)
        for rate in ctx.plan.e2e_rates:
            # A backlog left by a rate that was not sustained would be counted against the next.
            if not _wait(partial(_sent_at_least, system, expected), 60.0, system, poll=0.25):
                rates.append({"rate": rate, "skipped": "the backlog of a lower rate never drained"})
                continue
            time.sleep(0.5)
            log(f"  end to end at {rate} msg/s …")
            rates.append(_e2e_rate(ctx, system, rds, creds, rate, first))
            first += int(rate * ctx.plan.e2e_duration)
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


def _cpu(system: System, rds: EmbeddedRedis) -> dict[str, float]:
    """CPU seconds so far of each service process, and of Redis."""
    pids = {name: p.pid for name, p in system.stack.children if p.poll() is None}
    if rds.process is not None:
        pids["redis"] = rds.process.pid
    return {name: cpu_seconds([pid]) for name, pid in pids.items()}


def _cpu_ms_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(1000 * (after[k] - before.get(k, 0.0)) / max(1, n), 3) for k in after}


def _drain_rate(
    ctx: Context,
    system: System,
    rds: EmbeddedRedis,
    stream: str,
    group: str,
    entries: Any,
) -> dict[str, Any]:
    client = redis.Redis(port=rds.port)
    cpu0 = _cpu(system, rds)
    started = time.perf_counter()
    n = _fill(client, stream, entries)
    filled = time.perf_counter() - started
    ok = _wait(lambda: _drained(client, stream, group), 120.0, system, poll=0.01)
    took = time.perf_counter() - started
    cpu = _cpu_ms_per(cpu0, _cpu(system, rds), n)
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
        _wait(lambda: _drained(client, outbox, group), 30.0, system)
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

        ok = _wait(sent, 60.0, system, poll=0.1)
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
        from bench.ingress import baseline_cpu_ms

        log("  verify+decrypt baseline (plain ASGI, one core) …")
        baseline = baseline_cpu_ms(ctx)
    out["baseline_cpu_ms"] = baseline
    with EmbeddedRedis(appendfsync="everysec") as rds:
        out["e2e"] = _end_to_end(ctx, rds, log)
        out["consumers"] = _consumers(ctx, rds, log)
        log("  gettoken at a cold start …")
        out["gettoken"] = _gettoken(ctx, rds)
    return out
