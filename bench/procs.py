"""Processes of a benchmark run: CPU pinning, servers started and stopped, RSS, Redis.

The machine's cores are split in two: the server under test gets the first, the load generator
(and Redis) the second. With fewer than two cores nothing is pinned and the report says so.
Every child dies with us (``PR_SET_PDEATHSIG``) and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devkit.embedded_redis import EmbeddedRedis, die_with_parent, free_port

__all__ = [
    "Cores",
    "Server",
    "cores",
    "pin",
    "redis_server",
    "rss_mb",
    "server",
    "tree",
    "wait_http",
]


@dataclass(frozen=True, slots=True)
class Cores:
    server: list[int] | None  # None: not pinned
    load: list[int] | None

    @property
    def pinned(self) -> bool:
        return self.server is not None


def cores() -> Cores:
    """Server on the first allowed core, generator on the second; unpinned below two cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Cores(None, None)
    return Cores([allowed[0]], [allowed[1]])


def pin(pid: int, cpus: list[int] | None) -> None:
    """Pin every thread of ``pid``; threads started later inherit their starter's affinity."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (uvicorn's workers are children of its supervisor)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):
            for child in task.read_text().split():
                found += tree(int(child))
    return found


def rss_mb(pid: int) -> float:
    """Resident set size of one process, from /proc/<pid>/status VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _preexec(cpus: list[int] | None) -> Callable[[], None]:
    def run() -> None:  # pragma: no cover - runs in the child between fork and exec
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        die_with_parent()

    return run


def wait_http(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Until something on ``port`` answers an HTTP request (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server on port {port} exited before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f}s")


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


@contextlib.contextmanager
def server(
    kind: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    cpus: list[int] | None,
    workers: int = 1,
    label: str | None = None,
) -> Iterator[Server]:
    """``python -m bench.serve kind`` pinned to ``cpus``, ready when it answers HTTP."""
    port = free_port()
    log = log_dir / f"{label or kind}.log"
    argv = ["-m", "bench.serve", kind, "--port", str(port), "--workers", str(workers)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_preexec(cpus),
        )
    srv = Server(kind, port, process, log)
    try:
        wait_http(port, 60, alive=lambda: process.poll() is None)
        if workers > 1:
            time.sleep(1.5)  # the first answer came from one worker; let the others bind too
        yield srv
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{srv.tail()}") from None
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(appendfsync: str, cpus: list[int] | None) -> Iterator[EmbeddedRedis]:
    """An EmbeddedRedis with this fsync policy, every thread pinned to ``cpus``."""
    with EmbeddedRedis(appendfsync=appendfsync) as redis:
        assert redis.process is not None
        pin(redis.process.pid, cpus)
        yield redis
