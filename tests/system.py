"""The whole system as real processes on loopback, for end-to-end, browser and chaos tests.

``running_system(redis_url, tmp_path)`` starts the fake WeCom, the ingress, the responder and
the sender on free ports (each its own ``wecom-bus`` process, output in ``<tmp>/<name>.log``),
waits until every /readyz answers, and stops them all afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from devkit.dev import Stack, dev_credentials
from devkit.embedded_redis import free_port

SERVICES = ("fake-wecom", "ingress", "responder", "sender")


@dataclass
class System:
    stack: Stack
    ports: dict[str, int]
    env: dict[str, str]
    log_dir: Path

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    @property
    def api_key(self) -> str:
        return self.env["SENDER_API_KEY"]

    def fake(self, method: str, path: str, **kw: Any) -> Any:
        response = httpx.request(method, self.url("fake-wecom", path), timeout=30, **kw)
        response.raise_for_status()
        return response.json()

    def push(self, **spec: Any) -> Any:
        """WeCom pushes a callback (signed, encrypted, retried as WeCom does)."""
        return self.fake("POST", "/fake/callbacks", json=spec)

    def sends(self, app: str | None = None) -> list[dict[str, Any]]:
        params = {"app": app} if app else {}
        messages: list[dict[str, Any]] = self.fake("GET", "/fake/messages", params=params)[
            "messages"
        ]
        return messages

    def wait_for(
        self, condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stack.check_alive()
            if result := condition():
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def cli(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``wecom-bus ARGV`` with this system's environment (or ``env``)."""
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *argv],
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def text_replies(self) -> dict[str, list[str]]:
        """Each member's delivered text replies, in the order WeCom received them."""
        found: dict[str, list[str]] = collections.defaultdict(list)
        for message in self.sends():
            body = message["body"]
            if message["status"] == "delivered" and body.get("msgtype") == "text":
                found[body["touser"]].append(body["text"]["content"])
        return found

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def system_env(redis_url: str, ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "BUS_", "SENDER_"))}
    env.update(
        REDIS_URL=redis_url,
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        BUS_CLAIM_IDLE="2",
        BUS_HANDLER_TIMEOUT="1.6",  # the fault tests count on slow WeCom calls being cut short
        BUS_DRAIN_TIMEOUT="5",
        SENDER_API_KEY=secrets.token_urlsafe(24),
        FAKE_WECOM_MEMBERS=",".join(["alice", "bob", "carol", *(f"user{i}" for i in range(200))]),
    )
    dev_credentials(env, ports["fake-wecom"], ports["ingress"])
    if "WECOM_APPS_FILE" in extra:  # the apps file describes every app, callbacks by name
        for key in ("CORP_ID", "AGENT_ID", "SECRET", "TOKEN", "ENCODING_AES_KEY"):
            env.pop(f"WECOM_{key}")
        env.pop("FAKE_WECOM_CALLBACK_URL")
        env["FAKE_WECOM_CALLBACK_BASE"] = f"http://127.0.0.1:{ports['ingress']}"
    env.update(extra)
    return env


def fresh_database(redis_url: str) -> None:
    """Empty the suite's database before a module starts its system: streams, groups and marks
    an earlier test left would otherwise be consumed or matched there (a responder answering a
    leftover entry, a member's order mark ahead of the new entries). Not inside a running
    system: its groups would be gone."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()


@contextlib.contextmanager
def running_system(
    redis_url: str, log_dir: Path, services: tuple[str, ...] = SERVICES, **extra_env: str
) -> Iterator[System]:
    ports = {name: free_port() for name in SERVICES}
    env = system_env(redis_url, ports, **extra_env)
    stack = Stack(env=env, log_dir=log_dir)
    system = System(stack=stack, ports=ports, env=env, log_dir=log_dir)
    try:
        for name in services:
            stack.spawn(name, "--host", "127.0.0.1", "--port", str(ports[name]))
        stack.wait_ready({n: system.url(n, "/readyz") for n in services}, timeout=60)
        yield system
    finally:
        stack.stop()
