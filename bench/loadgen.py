"""The load generator: pre-built HTTP/1.1 requests over N persistent keep-alive connections.

asyncio ``Protocol`` objects on uvloop, one request in flight per connection (no pipelining), the
request bytes built before the clock starts, responses parsed only as far as the status and
Content-Length. Two modes:

* ``closed``: every connection sends its next request as soon as the previous answer arrives
  (fixed concurrency = ``connections``); throughput and latency are taken over the responses
  completed in the measuring window after ``warmup`` seconds.
* ``open``: requests are due at ``rate`` per second whatever the server does; one waits for a
  free connection if none is idle, and its latency counts from when it was due (no coordinated
  omission). ``send_times`` gives the wall-clock send time of each request (end-to-end runs).

Run as ``python -m bench.loadgen '<LoadConfig JSON>'`` (pinned to ``cpus``, GC off); it prints a
``LoadResult`` as JSON. Every run is bounded: it stops after its duration, when the requests
run out (``repeat=False``), or at a hard deadline.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import msgspec

from bench.callbacks import load_requests

__all__ = ["LoadConfig", "LoadResult", "percentiles", "run_load", "run_load_async"]

_HARD_EXTRA_S = 15.0  # a run that has not finished this long after its duration is cut


class LoadConfig(msgspec.Struct, frozen=True, kw_only=True):
    port: int
    requests_file: str
    host: str = "127.0.0.1"
    mode: str = "closed"  # closed | open
    connections: int = 32
    rate: float = 0.0  # open mode: requests per second
    warmup: float = 1.0
    duration: float = 5.0
    repeat: bool = True  # cycle the requests; False: each request at most once
    offset: int = 0  # first request to use
    cpus: list[int] | None = None
    record_sends: bool = False
    watch_pids: list[int] = msgspec.field(default_factory=list)  # the server's processes


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    connections: int
    sent: int
    completed: int  # 200 answers in the measuring window (nothing else counts as throughput)
    errors: int  # answers other than 200 and broken connections, whole run
    statuses: dict[str, int]
    window_s: float
    rps: float  # 200s per second of the window
    latency_ms: dict[str, float]  # of the 200s
    exhausted: bool  # the requests ran out before the duration
    behind_ms: float  # open mode: worst delay of a send behind its due time
    cpu_util: float  # this generator's CPU time / wall time over the run (1.0 = one full core)
    server_cpu_s: float = 0.0  # CPU time of ``watch_pids`` over the measuring window
    server_cpu_share: float = 0.0  # that over the window: 1.0 = it had a whole core
    rps_per_cpu: float = 0.0  # 200s / server CPU second: capacity, whatever else runs
    send_times: list[float] = msgspec.field(default_factory=list)
    sent_indices: int = 0  # requests taken from the file (offset .. offset + sent_indices)


_encode = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(LoadResult).decode
_decode_config = msgspec.json.Decoder(LoadConfig).decode


def _thread_files(pids: Sequence[int], name: str) -> Iterator[bytes]:
    """``/proc/<pid>/task/<tid>/<name>`` of every thread of these processes still there."""
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/{name}", "rb") as f:
                    yield f.read()
            except (FileNotFoundError, ProcessLookupError):
                continue


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of every thread of these processes so far (schedstat: nanoseconds)."""
    return sum(int(data.split()[0]) for data in _thread_files(pids, "schedstat")) / 1e9


def wake_ups(pids: Sequence[int]) -> int:
    """Times every thread of these processes so far went to sleep and was woken (voluntary
    context switches): what a message costs beyond its work, counted, not timed."""
    key = b"voluntary_ctxt_switches:"
    return sum(
        int(line.split()[1])
        for data in _thread_files(pids, "status")
        for line in data.splitlines()
        if line.startswith(key)
    )


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies in seconds, as milliseconds (zeros when empty)."""
    if not samples:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] * 1000, 3)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(sum(ordered) / n * 1000, 3),
    }


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "index", "need", "run", "started", "transport")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buf = bytearray()
        self.need = -1
        self.index = -1
        self.started = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast("asyncio.Transport", transport)

    def send(self, index: int, due: float) -> None:
        assert self.transport is not None
        self.index, self.started = index, due
        self.transport.write(self.run.requests[index])

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            self.need = end + 4 + length
        if len(buf) < self.need:
            return
        status = bytes(buf[9:12])
        del buf[: self.need]
        self.need = -1
        self.index = -1
        self.run.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.lost(self)


class _Run:
    def __init__(self, config: LoadConfig, requests: list[bytes]) -> None:
        self.config = config
        self.open = config.mode == "open"
        self.requests = requests
        self.loop = asyncio.get_running_loop()
        self.next = config.offset
        self.limit = len(requests) if not config.repeat else -1
        self.exhausted = False
        self.t_exhausted = 0.0
        self.sent = 0
        self.errors = 0
        self.statuses: collections.Counter[bytes] = collections.Counter()
        self.latencies: list[float] = []
        self.idle: list[_Conn] = []
        self.backlog: collections.deque[tuple[int, float]] = collections.deque()
        self.send_times: list[float] = []
        self.behind = 0.0
        now = time.perf_counter()
        self.t_start = now
        self.t_measure = now + config.warmup
        self.t_end = self.t_measure + config.duration
        self.done = self.loop.create_future()
        self.inflight = 0
        self.cpu: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if name not in self.cpu and self.config.watch_pids:
            self.cpu[name] = cpu_seconds(self.config.watch_pids)

    # --------------------------------------------------------------- request choice

    def take(self) -> int | None:
        index = self.next
        if self.limit >= 0 and index >= self.limit:
            if not self.exhausted:
                self.exhausted, self.t_exhausted = True, time.perf_counter()
                self.mark("end")
            return None
        self.next += 1
        return index % len(self.requests)

    def dispatch(self, conn: _Conn, index: int, due: float) -> None:
        self.sent += 1
        self.inflight += 1
        if self.config.record_sends:
            self.send_times.append(time.time())
        now = time.perf_counter()
        if now - due > self.behind:
            self.behind = now - due
        conn.send(index, due)

    # --------------------------------------------------------------- events

    def answered(self, conn: _Conn, status: bytes) -> None:
        now = time.perf_counter()
        self.inflight -= 1
        self.statuses[status] += 1
        if (
            status != b"200"
        ):  # only a 200 is a callback the receiver took: the rest is not work done
            self.errors += 1
        elif conn.started >= self.t_measure and (self.open or now <= self.t_end):
            # Open loop: every request due in the window counts, however late its answer.
            self.latencies.append(now - conn.started)
        self.next_for(conn, now)

    def next_for(self, conn: _Conn, now: float) -> None:
        if self.config.mode == "open":
            if self.backlog:
                index, due = self.backlog.popleft()
                self.dispatch(conn, index, due)
            else:
                self.idle.append(conn)
                self.check_done()
            return
        if now < self.t_end and (taken := self.take()) is not None:
            self.dispatch(conn, taken, now)
        else:
            self.idle.append(conn)
            self.check_done()

    def lost(self, conn: _Conn) -> None:
        if conn.index >= 0:
            self.inflight -= 1
            self.errors += 1
            self.statuses[b"err"] += 1
        if conn in self.idle:
            self.idle.remove(conn)
        if not self.done.done() and time.perf_counter() < self.t_end:
            self.loop.create_task(self.reconnect())
        else:
            self.check_done()

    async def reconnect(self) -> None:
        try:
            conn = await self.connect()
        except OSError:
            self.errors += 1
            await asyncio.sleep(0.05)
            self.check_done()
            return
        self.next_for(conn, time.perf_counter())

    async def connect(self) -> _Conn:
        _, proto = await self.loop.create_connection(
            lambda: _Conn(self), self.config.host, self.config.port
        )
        return proto

    def check_done(self) -> None:
        finished_sending = self.config.mode == "closed" or self.next >= self.open_total
        if self.inflight == 0 and finished_sending and not self.backlog and not self.done.done():
            self.done.set_result(None)

    # --------------------------------------------------------------- open-loop pacing

    @property
    def open_total(self) -> int:
        wanted = self.config.offset + int(
            self.config.rate * (self.config.warmup + self.config.duration)
        )
        return wanted if self.limit < 0 else min(wanted, self.limit)

    async def pace(self) -> None:
        rate, t0 = self.config.rate, self.t_start
        first = self.next
        total = self.open_total
        while self.next < total:
            now = time.perf_counter()
            while self.next < total:
                due = t0 + (self.next - first) / rate
                if due > now:
                    break
                index = self.next % len(self.requests)
                self.next += 1
                if self.idle:
                    self.dispatch(self.idle.pop(), index, due)
                else:
                    self.backlog.append((index, due))
            if self.next < total:
                await asyncio.sleep(max(0.0, t0 + (self.next - first) / rate - time.perf_counter()))
        if self.limit >= 0 and total == self.limit:
            self.exhausted = True
        self.check_done()


async def run_load_async(config: LoadConfig, requests: list[bytes]) -> LoadResult:
    """One run on the current event loop (the child process's, or a test's)."""
    if not requests:
        raise ValueError("no requests to send")
    run = _Run(config, requests)
    conns = [await run.connect() for _ in range(config.connections)]
    cpu0 = time.process_time()
    now = time.perf_counter()
    run.t_start, run.t_measure = now, now + config.warmup
    run.t_end = run.t_measure + config.duration
    pacer: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    loop.call_later(config.warmup, run.mark, "start")
    if config.mode == "closed":  # open loop: CPU counts until the last answer (below)
        loop.call_later(config.warmup + config.duration, run.mark, "end")
    if config.mode == "open":
        run.idle.extend(conns)
        pacer = asyncio.create_task(run.pace())
    else:
        for conn in conns:
            run.next_for(conn, now)
    try:
        await asyncio.wait_for(
            asyncio.shield(run.done), config.warmup + config.duration + _HARD_EXTRA_S
        )
    except TimeoutError:
        run.errors += run.inflight
        run.statuses[b"timeout"] += run.inflight
    finally:
        if pacer is not None:
            pacer.cancel()
    run.mark("end")  # open loop, or a closed run whose requests ran out
    wall = time.perf_counter() - run.t_start
    cpu = time.process_time() - cpu0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    window = config.duration
    if config.mode == "closed" and run.exhausted:
        window = max(1e-3, min(config.duration, run.t_exhausted - run.t_measure))
    completed = len(run.latencies)
    server_cpu = run.cpu.get("end", 0.0) - run.cpu.get("start", 0.0)
    return LoadResult(
        mode=config.mode,
        connections=config.connections,
        sent=run.sent,
        completed=completed,
        errors=run.errors,
        statuses={k.decode(errors="replace"): v for k, v in sorted(run.statuses.items())},
        window_s=round(window, 3),
        rps=round(completed / window, 1),
        latency_ms=percentiles(run.latencies),
        exhausted=run.exhausted,
        behind_ms=round(run.behind * 1000, 3),
        cpu_util=round(cpu / wall, 3) if wall > 0 else 0.0,
        server_cpu_s=round(server_cpu, 4),
        server_cpu_share=round(server_cpu / window, 3),
        rps_per_cpu=round(completed / server_cpu, 1) if server_cpu > 0 else 0.0,
        send_times=run.send_times,
        sent_indices=run.next - config.offset,
    )


def run_load(config: LoadConfig, *, timeout: float | None = None) -> LoadResult:
    """Run the generator in its own process (pinned to ``config.cpus``) and return its result."""
    limit = timeout or config.warmup + config.duration + _HARD_EXTRA_S + 30
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", _encode(config).decode()],
        capture_output=True,
        timeout=limit,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')[-800:]}")
    return _decode_result(done.stdout)


def _child(raw: str) -> int:
    config = _decode_config(raw)
    if config.cpus:
        os.sched_setaffinity(0, config.cpus)
    requests = load_requests(Path(config.requests_file))
    import uvloop

    gc.collect()
    gc.freeze()
    gc.disable()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run_load_async(config, requests))
    sys.stdout.buffer.write(_encode(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
