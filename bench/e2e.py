"""One end-to-end run: callbacks at a fixed rate through real processes to the fake WeCom.

Shared by the pipeline section (one embedded Redis) and the topology section (a cluster, a
Sentinel set). Every service is a real ``wecom-bus`` process started by
``tests.system.running_system``, nothing pinned. The fake WeCom knows ``e2e_members`` members so
that its 30-a-minute limit per member never binds. Callbacks are signed with the app's Token and
EncodingAESKey and sent by the load generator straight to the ingress (not through
``/fake/callbacks``, which would make the fake the generator); the latency of one message is the
fake's receipt time of its message/send minus the wall time its callback was sent. CPU is read
from /proc for every service and every Redis node; Redis's counters are summed over the
primaries.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import redis

from bench.callbacks import (
    Credentials,
    callback_requests,
    content_index,
    members,
    save_requests,
)
from bench.loadgen import LoadConfig, cpu_seconds, percentiles, run_load, wake_ups
from bench.plan import Context
from devkit.embedded_redis import EmbeddedRedis
from shared.config import Settings
from tests.system import System, running_system

__all__ = [
    "END_TO_END",
    "cpu",
    "cpu_ms_per",
    "e2e_rate",
    "sends",
    "sent_at_least",
    "system",
    "wait",
    "warm_up",
]

END_TO_END = ("ingress", "responder", "sender", "redis")  # what a message costs; not the fake


def _client(node: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=node.port, socket_timeout=10)


def _primaries(nodes: Sequence[EmbeddedRedis]) -> list[EmbeddedRedis]:
    found = []
    for node in nodes:
        client = _client(node)
        if client.info("replication")["role"] == "master":
            found.append(node)
        client.close()
    return found


# The services' own defaults, not the test suite's quick ones (tests.system reclaims entries
# after 2 s, whose claim and lease loops then poll Redis several times as often): the bench
# measures what an operator runs.
_SETTINGS = Settings()
DEFAULTS = {
    "BUS_CLAIM_IDLE": str(_SETTINGS.claim_idle),
    "BUS_HANDLER_TIMEOUT": str(_SETTINGS.handler_timeout),
    "BUS_DRAIN_TIMEOUT": str(_SETTINGS.drain_timeout),
}


@contextlib.contextmanager
def system(
    ctx: Context,
    url: str,
    nodes: Sequence[EmbeddedRedis],
    services: tuple[str, ...],
    name: str,
    **extra_env: str,
) -> Iterator[System]:
    """``services`` on ``url`` after every primary among ``nodes`` was emptied."""
    for node in _primaries(nodes):
        client = _client(node)
        client.flushall()
        client.close()
    log_dir = ctx.workdir / name
    log_dir.mkdir(exist_ok=True)
    env = {"FAKE_WECOM_MEMBERS": ",".join(members(ctx.plan.e2e_members)), **DEFAULTS, **extra_env}
    try:
        with running_system(url, log_dir, services=services, **env) as running:
            yield running
    except Exception as exc:
        tails = "\n".join(p.read_text(errors="replace")[-600:] for p in log_dir.glob("*.log"))
        raise RuntimeError(f"{name}: {exc}\n{tails}") from exc


def wait(condition: Callable[[], bool], timeout: float, system: System, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        system.stack.check_alive()
        time.sleep(poll)
    return False


def sends(system: System) -> int:
    """message/send requests the fake delivered (not those its duplicate check suppressed)."""
    return int(system.fake("GET", "/fake/stats")["by_status"].get("delivered", 0))


def sent_at_least(system: System, n: int) -> bool:
    return sends(system) >= n


def _redis_work(nodes: Sequence[EmbeddedRedis]) -> dict[str, int]:
    """Redis's counters, summed over the primaries: commands run, and reads (≈ round trips: a
    pipeline arrives in one). A replica's share is replication, not the clients' work."""
    total = {"commands": 0, "reads": 0}
    for node in _primaries(nodes):
        client = _client(node)
        stats = client.info("stats")
        client.close()
        for k in total:
            total[k] += int(stats[f"total_{k}_processed"])
    return total


def _each(
    system: System, nodes: Sequence[EmbeddedRedis], read: Callable[[list[int]], float]
) -> dict[str, float]:
    """``read`` of each service process, and of every Redis node together."""
    found = {name: read([p.pid]) for name, p in system.stack.children if p.poll() is None}
    found["redis"] = read([n.process.pid for n in nodes if n.process is not None])
    return found


def cpu(system: System, nodes: Sequence[EmbeddedRedis]) -> dict[str, float]:
    """CPU seconds so far of each service process, and of every Redis node together."""
    return _each(system, nodes, cpu_seconds)


def wakes(system: System, nodes: Sequence[EmbeddedRedis]) -> dict[str, float]:
    """Wake-ups so far (``bench.loadgen.wake_ups``) of each service process and of Redis."""
    return _each(system, nodes, lambda pids: float(wake_ups(pids)))


def cpu_ms_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: round(1000 * (after[k] - before.get(k, 0.0)) / max(1, n), 3) for k in after}


def warm_up(ctx: Context, system: System, creds: Credentials) -> None:
    """A few callbacks first: the token is fetched and the scripts are loaded."""
    warm = ctx.workdir / "e2e-warm.pkl"
    save_requests(callback_requests(creds, 40, first_index=10_000_000), warm)
    before = sends(system)
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
    time.sleep(1.0)
    wait(partial(sent_at_least, system, before + 40), 30.0, system, poll=0.1)


def _deliveries(
    system: System, since: int, first: int, send_times: list[float]
) -> tuple[list[float], dict[str, int], float]:
    """Latency of each message delivered; how many were delivered again and how many other
    requests came (a resend WeCom's duplicate check suppressed…); the last delivery."""
    records: list[dict[str, Any]] = system.fake("GET", "/fake/messages", params={"since": since})[
        "messages"
    ]
    latencies, seen, last_delivery = [], set(), 0.0
    again = {"duplicates": 0, "other_requests": 0}
    for record in records:
        content = ((record.get("body") or {}).get("text") or {}).get("content", "")
        index = content_index(content)
        if index is None or not 0 <= index - first < len(send_times):
            continue
        if record["status"] != "delivered":
            again["other_requests"] += 1
        elif index in seen:
            again["duplicates"] += 1
        else:
            seen.add(index)
            latencies.append(record["time"] - send_times[index - first])
            last_delivery = max(last_delivery, record["time"])
    return latencies, again, last_delivery


def e2e_rate(
    ctx: Context,
    system: System,
    nodes: Sequence[EmbeddedRedis],
    creds: Credentials,
    rate: int,
    first: int,
    duration: float,
    drain_timeout: float = 60.0,
) -> dict[str, Any]:
    """``rate`` callbacks a second for ``duration`` seconds (indices from ``first``), each
    followed to its message/send (for at most ``drain_timeout`` seconds after the last
    callback); CPU per message until the last one is out."""
    count = int(rate * duration)
    file = ctx.workdir / f"e2e-{rate}-{first}.pkl"
    save_requests(
        callback_requests(creds, count, first_index=first, member_count=ctx.plan.e2e_members),
        file,
    )
    since = system.fake("GET", "/fake/messages", params={"since": 1 << 60})["last"]
    sends0 = sends(system)
    redis0 = _redis_work(nodes)
    cpu0, wakes0 = cpu(system, nodes), wakes(system, nodes)
    result = run_load(
        LoadConfig(
            port=system.ports["ingress"],
            requests_file=str(file),
            mode="open",
            connections=64,
            rate=float(rate),
            warmup=0.0,
            duration=duration,
            repeat=False,
            record_sends=True,
        )
    )
    sent_done = time.time()
    # The fake's counter, not its message list, while waiting: the list is long and costly.
    # CPU is counted until the last message is out: a backlog's work belongs to its messages.
    wait(partial(sent_at_least, system, sends0 + result.sent), drain_timeout, system, poll=0.1)
    cpu_ms = cpu_ms_per(cpu0, cpu(system, nodes), result.sent)
    woken = {
        k: round((v - wakes0.get(k, 0.0)) / max(1, result.sent), 2)
        for k, v in wakes(system, nodes).items()
    }
    redis_work = {
        k: round((v - redis0[k]) / max(1, result.sent), 2) for k, v in _redis_work(nodes).items()
    }
    time.sleep(0.3)  # room for a message sent twice to show up
    latencies, again, last_delivery = _deliveries(system, since, first, result.send_times)
    stats = percentiles(latencies)
    # Delivered per second from the first callback to the last message out (or the run's
    # length, if shorter): below the offered rate when a backlog drained after the run.
    first_sent = result.send_times[0] if result.send_times else sent_done
    span = max(duration, last_delivery - first_sent)
    # Sustained: everything delivered once, nothing refused, the generator kept its schedule
    # and no queue built up (a growing backlog shows as seconds of latency by the end).
    sustained = (
        len(latencies) == result.sent == count
        and again["duplicates"] == 0
        and result.errors == 0
        and result.behind_ms < 250
        and stats["p99"] < 1000
        and last_delivery - sent_done < 1.0
    )
    return {
        "rate": rate,
        "sent": result.sent,
        "delivered": len(latencies),
        **again,
        "ack_errors": result.errors,
        "achieved_rate": round(result.sent / duration, 1),
        "delivered_per_s": round(len(latencies) / span, 1),
        "ack_latency_ms": result.latency_ms,
        "generator_behind_ms": result.behind_ms,
        "latency_ms": stats,
        "last_delivery_after_last_send_s": round(max(0.0, last_delivery - sent_done), 3),
        "sustained": sustained,
        "cpu_ms_per_message": cpu_ms,
        "end_to_end_cpu_ms": round(sum(cpu_ms.get(k, 0.0) for k in END_TO_END), 3),
        "redis_per_message": redis_work,
        "wakeups_per_message": woken,
    }
