"""Ingress measurements: the generator's ceiling, five receivers on one core, latency at half of
peak, fsync policy, one worker versus two, and Redis round trips per callback.

Every receiver runs on the server core, the generator and Redis on the load core (see
``bench.procs``), all with the same pre-built callbacks at the same concurrency. The ingress gets
each callback at most once (a repeat would be answered as a duplicate, doing less work): Redis is
flushed before each ingress run, so the pre-built callbacks are all new again.

Other work on the machine steals CPU from the server at random, so compared servers run at once
(an idle one costs nothing) and are loaded in turn, ``rounds`` times. Every figure is the median
over the rounds (never the best round), and only 200 answers count:

* ``rps``: 200s per wall second;
* ``capacity``: 200s per CPU second of the receiver's own work, from schedstat: its processes
  and, for the ingress, Redis too (the dedup mark and the XADD are its work, done in another
  process); what one whole core would carry, much less sensitive to other work;
* ``latency_ms``: each percentile's median over the same rounds;
* ``cpu_ms_per_callback``: 1000 / capacity. The plain-ASGI verify+decrypt receiver's figure is
  the unit the pipeline's CPU table is expressed in.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import msgspec
import redis

from bench import procs
from bench.loadgen import LoadConfig, LoadResult, run_load
from bench.plan import Context
from devkit.embedded_redis import EmbeddedRedis

__all__ = ["baseline_at_rates", "baseline_cpu_ms", "run_ingress", "summary"]


def summary(result: LoadResult) -> dict[str, Any]:
    """A LoadResult without the per-request send times."""
    out = msgspec.structs.asdict(result)
    out.pop("send_times", None)
    return out


def _env(ctx: Context, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "BUS_"))}
    env.update(ctx.creds.env(), REDIS_URL=redis_url, LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    return env


def _flush(port: int) -> None:
    """Forget every dedup mark and event, so the pre-built callbacks are all new again."""
    client = redis.Redis(port=port)
    client.flushall()
    client.close()


def _load(
    ctx: Context, srv: procs.Server, *, also: Sequence[int] = (), **config: Any
) -> LoadResult:
    """A run against ``srv``; ``also``: more processes whose CPU counts as the server's."""
    base: dict[str, Any] = {
        "port": srv.port,
        "watch_pids": [*procs.tree(srv.process.pid), *also],
        "requests_file": str(ctx.requests_file),
        "connections": ctx.plan.connections,
        "warmup": ctx.plan.warmup,
        "duration": ctx.plan.duration,
        "cpus": ctx.cores.load,
    }
    return run_load(LoadConfig(**{**base, **config}))


def _ingress(ctx: Context, srv: procs.Server, rds: EmbeddedRedis, **config: Any) -> LoadResult:
    """A run against the ingress: Redis flushed first, each callback sent at most once, and
    Redis's CPU counted as the ingress's."""
    _flush(rds.port)
    assert rds.process is not None
    return _load(ctx, srv, also=[rds.process.pid], repeat=False, **config)


def _serve(
    ctx: Context,
    kind: str,
    env: dict[str, str],
    label: str | None = None,
    *,
    pinned: bool = True,
    workers: int = 1,
) -> contextlib.AbstractContextManager[procs.Server]:
    cpus = ctx.cores.server if pinned else None
    return procs.server(kind, env, ctx.workdir, cpus=cpus, workers=workers, label=label)


Run = Callable[[], LoadResult]


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def _merged(done: list[LoadResult]) -> dict[str, Any]:
    """One receiver's rounds as one figure each: medians over the rounds, totals of errors."""
    out = summary(done[len(done) // 2])  # the shape; every figure below replaces its own
    out["rps"] = _median([r.rps for r in done])
    out["capacity"] = round(_median([r.rps_per_cpu for r in done]), 1)
    out["cpu_ms_per_callback"] = round(1000 / out["capacity"], 4) if out["capacity"] else 0.0
    out["server_cpu_share"] = _median([r.server_cpu_share for r in done])
    out["latency_ms"] = {k: _median([r.latency_ms[k] for r in done]) for k in done[0].latency_ms}
    out["errors"] = sum(r.errors for r in done)
    statuses: Counter[str] = Counter()
    for r in done:
        statuses.update(r.statuses)
    out["statuses"] = dict(statuses)
    out["rounds_rps"] = [r.rps for r in done]
    out["rounds_capacity"] = [r.rps_per_cpu for r in done]
    out["rounds_p99"] = [r.latency_ms["p99"] for r in done]
    return out


def _compare(runs: dict[str, Run], rounds: int) -> dict[str, Any]:
    """Each run in turn, ``rounds`` times, the order reversed every other round (so a drift in
    what else the machine does evens out); medians over the rounds."""
    names = list(runs)
    results: dict[str, list[LoadResult]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            results[name].append(runs[name]())
    return {name: _merged(done) for name, done in results.items()}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _paired(runs: dict[str, Any], a: str, b: str, key: str) -> float:
    """Median over rounds of a/b, each pair measured in the same round."""
    pairs = zip(runs[a][f"rounds_{key}"], runs[b][f"rounds_{key}"], strict=True)
    return round(statistics.median(_ratio(x, y) for x, y in pairs), 3)


def _generator_ceiling(ctx: Context, env: dict[str, str]) -> dict[str, Any]:
    """The generator against a responder that does nothing, and against the bare app at 2x."""
    with _serve(ctx, "raw", env) as raw:
        raw_result = _load(ctx, raw)
    with _serve(ctx, "bare", env, "bare-2x") as bare:
        double = _load(ctx, bare, connections=2 * ctx.plan.connections)
    # One core of generator CPU would carry rps / cpu_util requests a second.
    ceiling = raw_result.rps / raw_result.cpu_util if raw_result.cpu_util > 0 else 0.0
    return {
        "raw_responder": summary(raw_result),
        "bare_at_2x_concurrency": summary(double),
        "ceiling_rps_per_core": round(ceiling, 1),
    }


KINDS = ("bare", "verify", "asgi", "usual", "ingress")
PAIRS = {
    "ingress_vs_asgi": ("ingress", "asgi"),  # the honest bound: both plain ASGI apps
    "ingress_vs_verify": ("ingress", "verify"),
    "ingress_vs_usual": ("ingress", "usual"),
}


def _receivers(ctx: Context, env: dict[str, str], rds: EmbeddedRedis) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(_serve(ctx, kind, env)) for kind in KINDS}
        plans: dict[str, Run] = {
            kind: partial(_ingress, ctx, srv, rds)
            if kind == "ingress"
            else partial(_load, ctx, srv)
            for kind, srv in servers.items()
        }
        runs = _compare(plans, ctx.plan.rounds)
    pairs = {kind: (kind, "bare") for kind in KINDS} | PAIRS
    return {
        "runs": runs,
        # capacity ratios: median over rounds of the two figures measured in the same round
        "ratios": {name: _paired(runs, a, b, "capacity") for name, (a, b) in pairs.items()},
        "wall_ratios": {name: _paired(runs, a, b, "rps") for name, (a, b) in pairs.items()},
        "baseline_cpu_ms": runs["asgi"]["cpu_ms_per_callback"],
    }


def baseline_cpu_ms(ctx: Context) -> float:
    """CPU ms per callback of the plain-ASGI verify+decrypt receiver, median of the rounds."""
    env = _env(ctx, "redis://127.0.0.1:1")  # it never reaches Redis
    with _serve(ctx, "asgi", env, "asgi-baseline") as srv:
        runs = _compare({"asgi": partial(_load, ctx, srv)}, ctx.plan.rounds)
    cpu_ms: float = runs["asgi"]["cpu_ms_per_callback"]
    return cpu_ms


def baseline_at_rates(ctx: Context, rates: Sequence[int]) -> dict[int, float]:
    """CPU ms per callback of the plain-ASGI verify+decrypt receiver under the end-to-end run's
    load: ``rate`` callbacks a second, open loop over 64 connections, nothing pinned; the median
    of ``rounds`` runs per rate. Requests arriving one at a time cost a receiver more each than
    a saturating closed loop does (a wake-up, a read and a write per request, nothing shared),
    and the ingress in the end-to-end run pays that too: this is its like-for-like unit."""
    env = _env(ctx, "redis://127.0.0.1:1")  # it never reaches Redis
    found: dict[int, list[float]] = {rate: [] for rate in rates}
    with _serve(ctx, "asgi", env, "asgi-at-rate", pinned=False) as srv:
        for _ in range(ctx.plan.rounds):
            for rate in rates:
                result = _load(
                    ctx,
                    srv,
                    mode="open",
                    rate=float(rate),
                    connections=64,
                    duration=ctx.plan.e2e_duration,
                    cpus=None,
                )
                if result.rps_per_cpu and result.errors == 0:
                    found[rate].append(1000 / result.rps_per_cpu)
    return {rate: _median(values) for rate, values in found.items() if values}


class _Monitor:
    """Redis MONITOR on a raw socket: which commands arrive from clients and from scripts."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.data = bytearray()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.data += chunk

    def stop(self) -> tuple[Counter[str], Counter[str]]:
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()
        clients: Counter[str] = Counter()
        scripts: Counter[str] = Counter()
        for line in self.data.decode(errors="replace").splitlines():
            # +1700000000.123456 [0 127.0.0.1:5000] "evalsha" ...   or   [0 lua] "SET" ...
            if "[" not in line or '"' not in line:
                continue
            source = line[line.index("[") + 1 : line.index("]")]
            command = line.split('"')[1].lower()
            (scripts if source.endswith(" lua") else clients)[command] += 1
        return clients, scripts


def _round_trips(ctx: Context, env: dict[str, str], rds: EmbeddedRedis) -> dict[str, Any]:
    n = ctx.plan.roundtrip_callbacks
    client = redis.Redis(port=rds.port)
    with _serve(ctx, "ingress", env, "ingress-rtt") as srv:
        _ingress(ctx, srv, rds, mode="open", rate=200.0, warmup=0.0, duration=0.1)
        before = int(client.info("stats")["total_commands_processed"])
        monitor = _Monitor(rds.port)
        # offset: past the warm-up's callbacks, which Redis still remembers
        result = _load(
            ctx,
            srv,
            mode="open",
            rate=400.0,
            warmup=0.0,
            duration=n / 400,
            repeat=False,
            offset=100,
        )
        clients, scripts = monitor.stop()
        after = int(client.info("stats")["total_commands_processed"])
    client.close()
    answered = max(1, result.sent - result.errors)
    control = clients.pop("info", 0)  # our own reads; MONITOR itself is not echoed
    return {
        "callbacks": answered,
        "round_trips_per_callback": round(sum(clients.values()) / answered, 3),
        # less our INFO before and the MONITOR command
        "commands_per_callback": round((after - before - 2 - control) / answered, 3),
        "from_client": dict(clients),
        "inside_scripts": dict(scripts),
    }


def run_ingress(ctx: Context, log: Callable[[str], None] = print) -> dict[str, Any]:
    """All ingress measurements; Redis (appendfsync everysec) runs on the load core."""
    out: dict[str, Any] = {"cores": {"server": ctx.cores.server, "load": ctx.cores.load}}
    rounds = ctx.plan.rounds
    with contextlib.ExitStack() as stack:
        rds = stack.enter_context(procs.redis_server("everysec", ctx.cores.load))
        env = _env(ctx, rds.url)
        log("  generator ceiling …")
        out["generator"] = _generator_ceiling(ctx, env)
        log(f"  {len(KINDS)} receivers on one core, {rounds} round(s) …")
        out.update(_receivers(ctx, env, rds))
        peak = out["runs"]["ingress"]["rps"]
        log(f"  ingress latency at half of peak ({peak / 2:.0f}/s) …")
        with _serve(ctx, "ingress", env, "ingress-half") as srv:
            halves = [
                _ingress(ctx, srv, rds, mode="open", rate=max(1.0, peak / 2)) for _ in range(rounds)
            ]
        # Medians over the rounds: one unlucky round (another process holding the core for a
        # few ms) must not decide the figure, nor the luckiest one.
        out["half_peak"] = _merged(halves)
        log("  Redis round trips per callback …")
        out["redis"] = _round_trips(ctx, env, rds)

        log(f"  appendfsync always vs everysec, {rounds} round(s) …")
        always = stack.enter_context(procs.redis_server("always", ctx.cores.load))
        with contextlib.ExitStack() as servers:
            a = servers.enter_context(_serve(ctx, "ingress", _env(ctx, always.url), "i-always"))
            e = servers.enter_context(_serve(ctx, "ingress", env, "i-everysec"))
            fsync = _compare(
                {
                    "everysec": partial(_ingress, ctx, e, rds),
                    "always": partial(_ingress, ctx, a, always),
                },
                rounds,
            )
        fsync["ratio_always_to_everysec"] = _paired(fsync, "always", "everysec", "rps")
        out["fsync"] = fsync

        log(f"  one uvicorn worker vs two, nothing pinned but the generator, {rounds} round(s) …")
        with contextlib.ExitStack() as servers:
            one = servers.enter_context(_serve(ctx, "ingress", env, "i-w1", pinned=False))
            two = servers.enter_context(
                _serve(ctx, "ingress", env, "i-w2", pinned=False, workers=2)
            )
            workers = _compare(
                {
                    "1": lambda: _ingress(ctx, one, rds),
                    "2": lambda: _ingress(ctx, two, rds),
                },
                rounds,
            )
        workers["ratio_2_to_1"] = _paired(workers, "2", "1", "rps")
        out["workers"] = workers
    return out
