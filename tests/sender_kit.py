"""A sender wired to the project's fake WeCom, in-process (httpx.ASGITransport), on real Redis.

The one module of the sender's tests that imports the fake WeCom, so moving the fake (to the
dev-only package) touches one import here. Two apps, ``default`` and ``hr``, so tests can show
one app's trouble leaving the other alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis

from devkit.fakewecom import DEFAULT_MEMBERS, FakeApp, FakeConfig, FakeWeCom, create_app
from devkit.fakewecom.faults import FaultSpec
from services.sender.actions import ActionHandler
from services.sender.api import create_api
from services.sender.handler import DuplicateCheck, OutboxHandler
from shared.bus import delayed, names
from shared.bus.options import ConsumerOptions
from shared.bus.outbox import enqueue
from shared.bus.worker import Consumer
from shared.config import AppSettings, Secret, Settings
from shared.wecom.client import TokenFetcher, TokenSource, WeComClient
from shared.wecom.governor import Governor
from shared.wecom.token import TokenCache
from tests import helpers

API_KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HR = AppSettings(
    name="hr",
    corp_id=helpers.CORP_ID,
    agent_id=1000003,
    secret=Secret("hr-secret-1234567890"),
    token=Secret(helpers.TOKEN),
    encoding_aes_key=Secret(helpers.AES_KEY),
)
BASE = "http://qyapi.test"


class Recording(httpx.AsyncBaseTransport):
    """The fake's transport, noting the path of every call that reaches it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, timeout: float = 5.0) -> None:
        self.inner = inner
        self.timeout = timeout  # ASGITransport enforces none; a held answer must time out
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        try:
            return await asyncio.wait_for(self.inner.handle_async_request(request), self.timeout)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        except OSError as exc:  # the fake's injected reset, as a socket would report it
            raise httpx.ReadError(str(exc), request=request) from None


@dataclass
class Kit:
    """The fake WeCom, a first sender replica (``consumer``, ``handler``) and its send API.

    ``more()`` starts another replica on the same Redis and fake (closed with the kit).
    """

    redis: Redis
    settings: Settings
    fake: FakeWeCom
    handler: OutboxHandler
    consumer: Consumer
    api: httpx.AsyncClient
    wire: Recording
    clock: Callable[[], float]
    make: Callable[[], Replica]
    replicas: list[Replica] = field(default_factory=list)

    def more(self) -> Replica:
        """Another sender replica: its own Redis client, token caches and consumer."""
        made = self.make()
        self.replicas.append(made)
        return made

    def fault(self, errcode: int, count: int = 1) -> None:
        """The next ``count`` message/send calls are answered with ``errcode``."""
        self.inject(errcode=errcode, count=count)

    def inject(self, **spec: Any) -> None:
        """Queue a fault of the fake (errcode, timeout, reset, delay…) for message/send."""
        self.fake.faults.add(FaultSpec(**spec, path="message/send"))

    def lose_answer(self) -> None:
        """The next message/send is delivered, but its answer never comes back (a timeout)."""
        spec = FaultSpec(timeout=True, deliver=True, seconds=5, path="message/send")
        self.fake.faults.add(spec)

    def sends(self, *statuses: str, app: str | None = None) -> list[dict[str, Any]]:
        """Bodies of message/send calls the fake saw, oldest first (``delivered`` by default)."""
        wanted = statuses or ("delivered",)
        return [
            r.body
            for r in self.fake.fake.sends
            if r.status in wanted and (app is None or r.app == app)
        ]

    async def put(self, body: dict[str, Any], **kw: Any) -> str:
        return await enqueue(
            self.redis, self.settings, json.dumps(body).encode(), origin="test", **kw
        )

    async def drain(self, *, timeout: float = 20.0) -> None:
        """Run the sender and the delayed queue until nothing is left to send (bounded)."""
        deadline = time.monotonic() + timeout
        outbox = names.outbox(self.settings.prefix)
        while time.monotonic() < deadline:
            await self.consumer.run_burst()
            await delayed.move_due(
                self.redis, self.settings.prefix, target_stream=outbox, now=self.clock()
            )
            pending = (await self.redis.xpending(outbox, names.SENDER_GROUP))["pending"]
            groups = await self.redis.xinfo_groups(outbox)
            lag = sum(int(g.get("lag") or 0) for g in groups)
            if not pending and not lag and not await delayed.size(self.redis, self.settings.prefix):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the sender did not finish within the timeout")


def tokens(redis: Redis, app: AppSettings) -> Callable[[TokenFetcher], TokenSource]:
    def factory(fetch: TokenFetcher) -> TokenSource:
        return TokenCache(redis, fetch, corp_id=app.corp_id, agent_id=app.agent_id, name=app.name)

    return factory


def text(to: str, content: str, **more: Any) -> dict[str, Any]:
    return {"touser": to, "msgtype": "text", "text": {"content": content}, **more}


@dataclass
class Options:
    duplicate_check: DuplicateCheck
    waits: tuple[float, ...]
    probe_interval: float
    clock: Callable[[], float]


@dataclass
class Replica:
    """One sender process's parts: its own Redis client, token caches, clients and consumer."""

    redis: Redis
    clients: dict[str, WeComClient]
    handler: OutboxHandler
    consumer: Consumer

    async def aclose(self) -> None:
        if self.handler.actions is not None:
            await self.handler.actions.http.aclose()
        for client in self.clients.values():
            await client.aclose()
        await self.redis.aclose()


def replica(redis_url: str, settings: Settings, wire: Recording, options: Options) -> Replica:
    redis = Redis.from_url(redis_url)
    clients = {
        name: WeComClient(app, token_source=tokens(redis, app), base_url=BASE, transport=wire)
        for name, app in settings.apps.items()
    }
    handler = OutboxHandler(
        redis,
        prefix=settings.prefix,
        clients=clients,
        governor=Governor(redis, prefix=settings.prefix, clock=options.clock),
        backoff_base=0.02,
        backoff_cap=0.05,
        rate_limited_waits=options.waits,
        probe_interval=options.probe_interval,
        probe_recheck=0.1,
        duplicate_check=options.duplicate_check,
        max_deliveries=5,
    )
    handler.actions = ActionHandler(
        redis,
        prefix=settings.prefix,
        clients=clients,
        http=httpx.AsyncClient(transport=wire),
        api_base=BASE,
        backoff=handler.backoff,
    )
    consumer = Consumer(
        redis,
        stream=names.outbox(settings.prefix),
        group=names.SENDER_GROUP,
        handler=handler,
        # claim_idle: longer than any send here, even on a loaded machine
        options=ConsumerOptions(start="backlog", claim_idle=5.0, max_deliveries=5),
    )
    return Replica(redis, clients, handler, consumer)


@asynccontextmanager
async def sender_kit(
    redis_url: str,
    *,
    duplicate_check: DuplicateCheck = "redelivery",
    waits: tuple[float, ...] = (0.2, 0.4),
    probe_interval: float = 0.2,
    clock: Callable[[], float] = time.time,
    members: tuple[str, ...] = DEFAULT_MEMBERS,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Kit]:
    base = helpers.settings(redis_url, SENDER_API_KEY=API_KEY, **(env or {}))
    settings = msgspec.structs.replace(base, apps={**base.apps, "hr": HR})
    fake = create_app(
        FakeConfig(
            apps=tuple(FakeApp.from_settings(a, None) for a in settings.apps.values()),
            clock=clock,  # the fake's member windows move with the sender's clock
            members=members,
        )
    )
    wire = Recording(httpx.ASGITransport(app=fake), timeout=1.0)
    options = Options(duplicate_check, waits, probe_interval, clock)
    first = replica(redis_url, settings, wire, options)
    app = create_api(settings, first.redis, clients=first.clients)
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sender")
    kit = Kit(
        first.redis,
        settings,
        fake,
        first.handler,
        first.consumer,
        api,
        wire,
        clock,
        make=lambda: replica(redis_url, settings, wire, options),
        replicas=[first],
    )
    try:
        yield kit
    finally:
        await api.aclose()
        for made in kit.replicas:
            await made.aclose()
