"""The chaos driver: callbacks through the whole system while its processes are killed.

``run_chaos(plan, redis, system)`` pushes ``plan.callbacks`` text callbacks through the fake
WeCom (each from its own member with its own content, each delivered 1-3 times as WeCom may),
and meanwhile SIGKILLs and restarts the responder and the sender at random moments and SIGKILLs
Redis once. When the pushes are done it stops killing, waits until the bus has drained and
judges from the fake WeCom's records alone: every callback the ingress accepted (some attempt
answered 200) must have been answered by exactly one delivered message/send.

The plan is seeded, so a failing run can be repeated with the same kill schedule (the moments
are relative to the push schedule; process timings still differ from run to run).
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from redis.asyncio import Redis

from devkit.embedded_redis import EmbeddedRedis
from shared.bus import names
from tests.system import System

__all__ = [
    "ChaosPlan",
    "ChaosReport",
    "dump",
    "kill",
    "members_for",
    "restart",
    "run_chaos",
    "stream_fields",
]

KILLABLE = ("responder", "sender")
_DELIVERED = ("delivered", "partial")


@dataclass(frozen=True, kw_only=True)
class ChaosPlan:
    """What to push and what to break; the defaults are the CI-sized run."""

    callbacks: int = 300
    rate: float = 12.0  # callbacks started per second
    max_inflight: int = 200  # pushes waiting on the fake WeCom at once
    max_duplicate: int = 3  # each callback is delivered 1..max_duplicate times
    kill_every: tuple[float, float] = (2.0, 5.0)  # seconds between two process kills
    restart_after: tuple[float, float] = (0.0, 1.0)  # a killed process is down this long
    redis_kill_at: float = 0.5  # fraction of the callbacks started when Redis is killed
    redis_down: float = 1.5  # seconds between Redis SIGKILL and restart
    drain_timeout: float = 120.0
    settle: float = 5.0  # after draining, how long late duplicates may still show up
    seed: int = 20240611
    prefix: str = names.DEFAULT_PREFIX

    def content(self, i: int) -> str:
        # No 吗 and no "?": the reply rule leaves the text as it is, so reply == content.
        return f"chaos {self.seed} #{i:05d}"

    def member(self, i: int) -> str:
        return f"m{i:05d}"


def members_for(plan: ChaosPlan) -> str:
    """``FAKE_WECOM_MEMBERS`` for the plan: one member per callback (no per-member limits)."""
    return ",".join(plan.member(i) for i in range(plan.callbacks))


@dataclass
class ChaosReport:
    """The verdict, from the fake WeCom's records (and Redis for the diagnostics)."""

    callbacks: int = 0
    deliveries: int = 0  # callback POSTs the fake WeCom made, retries included
    accepted: int = 0
    not_accepted: list[int] = field(default_factory=list)  # every attempt failed
    answered_unaccepted: list[int] = field(default_factory=list)  # stored although all 5xx'd
    lost: list[int] = field(default_factory=list)  # accepted, no delivered reply
    duplicated: dict[int, int] = field(default_factory=dict)  # accepted, >1 delivered replies
    unexpected: list[str] = field(default_factory=list)  # replies to nothing we pushed
    suppressed: int = 0  # resends WeCom's duplicate check dropped (enable_duplicate_check)
    dropped: int = 0  # sends WeCom dropped for its per-member limits (should be 0)
    deadlettered: list[dict[str, str]] = field(default_factory=list)
    duplicate_events: dict[int, int] = field(default_factory=dict)  # stored more than once
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    gettoken: int = 0
    push_seconds: float = 0.0
    drain_seconds: float = 0.0
    drained: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.deadlettered
            or self.duplicate_events
            or self.dropped
        )

    def summary(self) -> str:
        lines = [
            f"chaos: {self.callbacks} callbacks, {self.deliveries} deliveries to the ingress "
            f"(HTTP statuses {dict(sorted(self.statuses.items(), key=str))})",
            f"  kills: {dict(self.kills)}; pushing took {self.push_seconds:.1f}s",
            f"  accepted {self.accepted}, not accepted {len(self.not_accepted)} "
            f"(answered anyway: {len(self.answered_unaccepted)})",
            f"  lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"dead-lettered {len(self.deadlettered)}, unexpected {len(self.unexpected)}, "
            f"events stored twice {len(self.duplicate_events)}",
            f"  resends suppressed by WeCom's duplicate check {self.suppressed}, "
            f"dropped by WeCom's limits {self.dropped}, gettoken calls {self.gettoken}",
            f"  drained {'yes' if self.drained else 'NO'} in {self.drain_seconds:.1f}s "
            "after the last push",
        ]
        if self.lost:
            lines.append(f"  lost: {self.lost[:20]}")
        if self.duplicated:
            lines.append(f"  duplicated: {dict(list(self.duplicated.items())[:20])}")
        for letter in self.deadlettered[:10]:
            lines.append(f"  dead letter: {letter}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items()}
        data["kills"] = dict(self.kills)
        data["statuses"] = {str(k): v for k, v in self.statuses.items()}
        data["ok"] = self.ok
        return data


async def stream_fields(client: Redis, key: str) -> list[dict[bytes, bytes]]:
    """Every entry's fields, oldest first (the client does not decode responses)."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(key))
    return [fields for _, fields in entries]


def kill(system: System, name: str) -> None:
    """SIGKILL the live ``name`` process and drop it from the stack (it is dead)."""
    for entry in list(system.stack.children):
        label, process = entry
        if label == name and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            system.stack.children.remove(entry)


def restart(system: System, name: str) -> subprocess.Popen[bytes]:
    """Start ``name`` again on its port (the stack stops it with the others)."""
    return system.stack.spawn(name, "--host", "127.0.0.1", "--port", str(system.ports[name]))


class _Chaos:
    def __init__(self, plan: ChaosPlan, redis: EmbeddedRedis, system: System) -> None:
        self.plan, self.redis, self.system = plan, redis, system
        self.rng = random.Random(plan.seed)
        self.report = ChaosReport(callbacks=plan.callbacks)
        self.records: dict[int, dict[str, Any]] = {}
        self.replies: collections.Counter[str] = collections.Counter()
        self.pushing = True
        self.since = 0
        self._pattern = re.compile(rf"chaos {plan.seed} #(\d{{5}})")

    # -- processes ----------------------------------------------------------------------

    def _kill(self, name: str) -> None:
        kill(self.system, name)
        self.report.kills[name] += 1

    def _restart(self, name: str) -> subprocess.Popen[bytes]:
        return restart(self.system, name)

    def _check_alive(self) -> None:
        """Anything that died without being killed by us is a failure of the run."""
        self.system.stack.check_alive()

    async def _killer(self) -> None:
        while self.pushing:
            await asyncio.sleep(self.rng.uniform(*self.plan.kill_every))
            if not self.pushing:
                return
            name = self.rng.choice(KILLABLE)
            self._kill(name)
            await asyncio.sleep(self.rng.uniform(*self.plan.restart_after))
            self._restart(name)

    async def _redis_outage(self) -> None:
        self.redis.kill()
        self.report.kills["redis"] += 1
        await asyncio.sleep(self.plan.redis_down)
        # start() polls with short blocking sleeps: fine, the driver only waits meanwhile.
        self.redis.start()

    # -- pushing ------------------------------------------------------------------------

    async def _push(self, client: httpx.AsyncClient, i: int, duplicate: int) -> None:
        spec = {
            "app": "default",
            "from": self.plan.member(i),
            "type": "text",
            "content": self.plan.content(i),
            "duplicate": duplicate,
        }
        response = await client.post("/fake/callbacks", json=spec)
        response.raise_for_status()
        self.records[i] = response.json()

    async def _pushes(self) -> None:
        plan = self.plan
        limit = asyncio.Semaphore(plan.max_inflight)
        base = self.system.url("fake-wecom")
        tasks: list[asyncio.Task[None]] = []
        redis_at = int(plan.callbacks * plan.redis_kill_at)
        outage: asyncio.Task[None] | None = None
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=base, timeout=180, trust_env=False) as client:

            async def one(i: int, duplicate: int) -> None:
                try:
                    await self._push(client, i, duplicate)
                finally:
                    limit.release()

            for i in range(plan.callbacks):
                due = started + i / plan.rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if i == redis_at and plan.redis_kill_at < 1:
                    outage = asyncio.create_task(self._redis_outage())
                if i % 50 == 0:
                    self._check_alive()
                await limit.acquire()
                duplicate = self.rng.randint(1, plan.max_duplicate)
                tasks.append(asyncio.create_task(one(i, duplicate)))
            await asyncio.gather(*tasks)
            if outage is not None:
                await outage
        self.report.push_seconds = time.monotonic() - started

    # -- judging ------------------------------------------------------------------------

    def _poll_replies(self) -> None:
        got = self.system.fake("GET", "/fake/messages", params={"since": self.since})
        for message in got["messages"]:
            if message["seq"] <= self.since:
                continue  # an older record touched again (recall, card update): seen before
            body = message.get("body")
            text = body.get("text", {}).get("content", "") if isinstance(body, dict) else ""
            if message["status"] in _DELIVERED:
                self.replies[text] += 1
            elif message["status"] == "suppressed":
                self.report.suppressed += 1
            elif message["status"] == "dropped":
                self.report.dropped += 1
        self.since = max(self.since, int(got["last"]))

    async def _bus_idle(self, client: Redis) -> bool:
        p = self.plan.prefix
        for stream, group in (
            (names.events(p), names.RESPONDER_GROUP),
            (names.outbox(p), names.SENDER_GROUP),
        ):
            infos = {g["name"]: g for g in await client.xinfo_groups(stream)}
            info = infos.get(group.encode())
            if info is None or info["pending"] or info.get("lag"):
                return False
            if await client.zcard(names.retry(stream, group)):
                return False
        return not await client.zcard(names.delayed(p))

    def _accepted(self) -> list[int]:
        return [
            i
            for i, record in self.records.items()
            if any(a.get("status") == 200 for a in record["attempts"])
        ]

    async def _drain(self, client: Redis) -> None:
        started = time.monotonic()
        wanted = {self.plan.content(i) for i in self._accepted()}
        while time.monotonic() - started < self.plan.drain_timeout:
            self._check_alive()
            self._poll_replies()
            if wanted <= self.replies.keys():
                try:
                    if await self._bus_idle(client):
                        self.report.drained = True
                        break
                except (OSError, ConnectionError):
                    pass
            await asyncio.sleep(0.25)
        self.report.drain_seconds = time.monotonic() - started
        # Late copies (a resend after a reclaim) need a claim round or two to show up.
        await asyncio.sleep(self.plan.settle)
        self._poll_replies()

    async def _judge(self, client: Redis) -> None:
        report, plan = self.report, self.plan
        accepted = set(self._accepted())
        report.accepted = len(accepted)
        for record in self.records.values():
            report.deliveries += len(record["attempts"])
            for attempt in record["attempts"]:
                report.statuses[attempt.get("status") or "no answer"] += 1
        report.not_accepted = sorted(set(range(plan.callbacks)) - accepted)
        known = {plan.content(i): i for i in range(plan.callbacks)}
        for text, count in self.replies.items():
            i = known.get(text)
            if i is None:
                report.unexpected.append(text)
            elif i not in accepted:
                report.answered_unaccepted.append(i)
            elif count > 1:
                report.duplicated[i] = count
        report.lost = sorted(i for i in accepted if self.replies[plan.content(i)] == 0)
        for fields in await stream_fields(client, names.deadletter(plan.prefix)):
            data = fields.get(b"data", b"").decode(errors="replace")
            found = self._pattern.search(data)
            report.deadlettered.append(
                {
                    "stream": fields.get(b"stream", b"").decode(),
                    "callback": found.group(1) if found else "?",
                    "error": fields.get(b"error", b"").decode(errors="replace"),
                }
            )
        stored: collections.Counter[int] = collections.Counter()
        for fields in await stream_fields(client, names.events(plan.prefix)):
            if found := self._pattern.search(fields.get(b"data", b"").decode(errors="replace")):
                stored[int(found.group(1))] += 1
        report.duplicate_events = {i: n for i, n in stored.items() if n > 1}
        stats = self.system.fake("GET", "/fake/stats")
        report.gettoken = sum(stats["gettoken"].values())

    async def run(self) -> ChaosReport:
        killer = asyncio.create_task(self._killer())
        try:
            await self._pushes()
        finally:
            self.pushing = False
            killer.cancel()
            await asyncio.gather(killer, return_exceptions=True)
        # A kill may have left a service down (restart pending when cancelled): bring it back.
        alive = {label for label, p in self.system.stack.children if p.poll() is None}
        for name in KILLABLE:
            if name not in alive:
                self._restart(name)
        client: Redis = Redis.from_url(self.redis.url, socket_timeout=10)
        try:
            await self._drain(client)
            await self._judge(client)
        finally:
            await client.aclose()
        return self.report


def run_chaos(plan: ChaosPlan, redis: EmbeddedRedis, system: System) -> ChaosReport:
    """Run ``plan`` against ``system`` (whose Redis is ``redis``); see the module docstring."""
    return asyncio.run(_Chaos(plan, redis, system).run())


def dump(report: ChaosReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
