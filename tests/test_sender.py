"""The sender on a real Redis, with WeCom stood in for at its HTTP boundary (MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis

from services.sender.api import create_api
from services.sender.handler import OutboxHandler
from shared.bus import delayed, names
from shared.bus.options import ConsumerOptions
from shared.bus.outbox import enqueue
from shared.bus.worker import Consumer
from shared.config import Settings
from shared.wecom.client import WeComClient
from shared.wecom.governor import Governor
from shared.wecom.token import TokenCache
from tests import helpers

API_KEY = "test-api-key-0123456789"


@dataclass
class FakeQyapi:
    """Just enough of qyapi: tokens, message/send with injectable errcodes and timeouts."""

    faults: list[int | str] = field(default_factory=list)
    tokens_issued: int = 0
    valid: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    revoke_after: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/gettoken"):
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            self.valid.add(token)
            return httpx.Response(
                200, json={"errcode": 0, "access_token": token, "expires_in": 7200}
            )
        body = json.loads(request.content)
        self.attempts.append(body)
        if request.url.params.get("access_token") not in self.valid:
            return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            errmsg = (
                "not allow to access from your ip, from ip: 10.1.2.3" if fault == 60020 else "x"
            )
            return httpx.Response(200, json={"errcode": fault, "errmsg": errmsg})
        self.sent.append(body)
        if self.revoke_after is not None and len(self.sent) == self.revoke_after:
            self.valid.clear()  # WeCom revoked the token early
        return httpx.Response(
            200, json={"errcode": 0, "errmsg": "ok", "msgid": f"m{len(self.sent)}"}
        )


@dataclass
class Sender:
    """A sender replica: its own Redis client, token cache, WeCom client and consumer."""

    redis: Redis
    client: WeComClient
    consumer: Consumer


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def qyapi() -> FakeQyapi:
    return FakeQyapi()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return helpers.settings(redis_url, SENDER_API_KEY=API_KEY)


@pytest.fixture
async def make_sender(
    redis_url: str, qyapi: FakeQyapi, clock: Clock, settings: Settings
) -> AsyncIterator[Callable[[], Sender]]:
    made: list[Sender] = []

    def make() -> Sender:
        redis = Redis.from_url(redis_url)
        app = settings.app()
        client = WeComClient(
            app,
            token_source=lambda fetch: TokenCache(
                redis, fetch, corp_id=app.corp_id, agent_id=app.agent_id
            ),
            base_url="http://qyapi.test",
            transport=httpx.MockTransport(qyapi),
        )
        governor = Governor(redis, clock=clock)
        handler = OutboxHandler(
            redis,
            prefix="wecom",
            clients={"default": client},
            governor=governor,
            backoff_base=0.02,
            backoff_cap=0.05,
            rate_limited_floor=0.05,
        )
        consumer = Consumer(
            redis,
            stream=names.outbox(),
            group=names.SENDER_GROUP,
            handler=handler,
            options=ConsumerOptions(start="backlog", claim_idle=0.5, max_deliveries=5),
        )
        sender = Sender(redis, client, consumer)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.client.aclose()
        await sender.redis.aclose()


async def put(redis: Redis, settings: Settings, body: dict[str, Any], **kw: Any) -> str:
    return await enqueue(redis, settings, json.dumps(body).encode(), origin="test", **kw)


async def entries(redis: Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(stream))


def text(to: str, content: str) -> dict[str, Any]:
    return {"touser": to, "msgtype": "text", "text": {"content": content}}


def contents(bodies: list[dict[str, Any]]) -> list[str]:
    return sorted(b["text"]["content"] for b in bodies)


async def test_a_request_is_sent_once_with_the_apps_agentid(
    redis: Redis, settings: Settings, qyapi: FakeQyapi, make_sender: Callable[[], Sender]
) -> None:
    request_id = await put(redis, settings, text("alice", "hello"))
    await make_sender().consumer.run_burst()
    assert qyapi.sent == [
        {
            "touser": "alice",
            "msgtype": "text",
            "agentid": helpers.AGENT_ID,
            "text": {"content": "hello"},
        }
    ]
    record = json.loads(cast(bytes, await redis.get(names.sent("wecom", request_id))))
    assert record["msgid"] == "m1"
    # Delivered again (e.g. replayed by an operator): sent:<id> stops a second send.
    [(_, first)] = await entries(redis, names.outbox())
    await redis.xadd(names.outbox(), {"data": first[b"data"]})
    await make_sender().consumer.run_burst()
    assert len(qyapi.sent) == 1


async def test_cold_start_three_replicas_two_hundred_sends_one_gettoken(
    redis: Redis, settings: Settings, qyapi: FakeQyapi, make_sender: Callable[[], Sender]
) -> None:
    for i in range(200):
        await put(redis, settings, text(f"user{i}", f"n{i}"))
    replicas = [make_sender() for _ in range(3)]
    await asyncio.gather(*(r.consumer.run_burst() for r in replicas))
    assert qyapi.tokens_issued == 1
    assert contents(qyapi.sent) == sorted(f"n{i}" for i in range(200))


async def test_token_revoked_mid_run_one_refresh_each_message_once(
    redis: Redis, settings: Settings, qyapi: FakeQyapi, make_sender: Callable[[], Sender]
) -> None:
    qyapi.revoke_after = 5
    for i in range(12):
        await put(redis, settings, text(f"u{i}", f"m{i}"))
    await make_sender().consumer.run_burst()
    assert qyapi.tokens_issued == 2
    assert contents(qyapi.sent) == sorted(f"m{i}" for i in range(12))


async def test_bursts_of_busy_and_freq_errors_are_delivered_later_once(
    redis: Redis, settings: Settings, qyapi: FakeQyapi, make_sender: Callable[[], Sender]
) -> None:
    qyapi.faults = [-1, -1, 45009, -1, 45033, "timeout"]
    for i in range(10):
        await put(redis, settings, text(f"u{i}", f"m{i}"))
    await make_sender().consumer.run_burst()
    assert contents(qyapi.sent) == sorted(f"m{i}" for i in range(10))
    assert await redis.xlen(names.deadletter()) == 0


async def test_a_redelivered_request_carries_duplicate_check(
    redis: Redis, settings: Settings, qyapi: FakeQyapi, make_sender: Callable[[], Sender]
) -> None:
    qyapi.faults = ["timeout"]
    await put(redis, settings, text("alice", "once"))
    await make_sender().consumer.run_burst()
    first, second = qyapi.attempts
    assert "enable_duplicate_check" not in first
    assert second["enable_duplicate_check"] == 1
    assert len(qyapi.sent) == 1


@pytest.mark.parametrize(
    ("errcode", "advice"),
    [
        (40003, "userid"),
        (40056, "agentid"),
        (44004, "empty"),
        (45002, "large"),
        (48002, "permission"),
        (60020, "10.1.2.3"),
        (81013, "visible"),
        (301002, "app"),
    ],
)
async def test_permanent_errors_go_to_the_dead_letter_with_advice(
    redis: Redis,
    settings: Settings,
    qyapi: FakeQyapi,
    make_sender: Callable[[], Sender],
    errcode: int,
    advice: str,
) -> None:
    qyapi.faults = [errcode]
    await put(redis, settings, text("alice", "x"))
    await make_sender().consumer.run_burst()
    assert qyapi.sent == []
    assert len(qyapi.attempts) == 1  # not retried
    [(_, fields)] = await entries(redis, names.deadletter())
    error = fields[b"error"].decode()
    assert f"errcode {errcode}" in error
    assert advice.lower() in error.lower()
    assert fields[b"group"] == b"sender"


async def test_forty_to_one_member_never_more_than_thirty_a_minute(
    redis: Redis,
    settings: Settings,
    qyapi: FakeQyapi,
    clock: Clock,
    make_sender: Callable[[], Sender],
) -> None:
    for i in range(40):
        await put(redis, settings, text("alice", f"m{i:02}"))
    sender = make_sender()
    await sender.consumer.run_burst()
    assert len(qyapi.sent) == 30
    assert await delayed.size(redis, "wecom") == 10
    # Not due yet: a scheduler pass moves nothing.
    assert await delayed.move_due(redis, "wecom", target_stream=names.outbox(), now=clock.now) == 0
    clock.now += 61
    moved = await delayed.move_due(redis, "wecom", target_stream=names.outbox(), now=clock.now)
    assert moved == 10
    await sender.consumer.run_burst()
    assert contents(qyapi.sent) == [f"m{i:02}" for i in range(40)]


# -- the internal send API ---------------------------------------------------------------------


@pytest.fixture
async def api(redis: Redis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(settings, redis, clients={})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sender"
    ) as client:
        yield client


AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_api_auth(api: httpx.AsyncClient, redis: Redis) -> None:
    body = text("alice", "hi")
    assert (await api.post("/v1/messages", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer wrong-key-000000000"}
    assert (await api.post("/v1/messages", json=body, headers=wrong)).status_code == 403
    assert await redis.xlen(names.outbox()) == 0
    response = await api.post("/v1/messages", json=body, headers=AUTH)
    assert response.status_code == 202
    assert response.json()["id"].startswith("api-")
    assert await redis.xlen(names.outbox()) == 1


async def test_api_is_off_without_a_key(redis: Redis, redis_url: str) -> None:
    app = create_api(helpers.settings(redis_url), redis, clients={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.post("/v1/messages", json=text("a", "b"), headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"msgtype": "text", "text": {"content": "no recipient"}}, "$.touser"),
        (text("alice", ""), "$.text.content"),
        (text("alice", "x" * 2049), "$.text.content"),
        ({"touser": "a", "msgtype": "sms", "text": {"content": "x"}}, "$.msgtype"),
        ({**text("a", "x"), "agentid": "1000002"}, "$.agentid"),
        ({**text("a", "x"), "agentid": 5}, "$.agentid"),
        ({**text("a", "x"), "app": "nope"}, "$.app"),
        ({**text("x", "x"), "touser": "|".join(f"u{i}" for i in range(1001))}, "$.touser"),
    ],
)
async def test_api_rejects_what_wecom_would_with_the_field(
    api: httpx.AsyncClient, redis: Redis, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/v1/messages", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await redis.xlen(names.outbox()) == 0


async def test_api_rejects_invalid_json(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/messages", content=b"{not json", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["field"] == "$"


async def test_api_idempotency_key(api: httpx.AsyncClient, redis: Redis) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = await api.post("/v1/messages", json=text("alice", "a"), headers=headers)
    again = await api.post("/v1/messages", json=text("alice", "a"), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert await redis.xlen(names.outbox()) == 1
    other = await api.post("/v1/messages", json=text("alice", "a"), headers=AUTH)
    assert other.json()["id"] != first.json()["id"]
    assert await redis.xlen(names.outbox()) == 2


async def test_api_status_of_a_request(
    api: httpx.AsyncClient, redis: Redis, make_sender: Callable[[], Sender]
) -> None:
    request_id = (await api.post("/v1/messages", json=text("a", "b"), headers=AUTH)).json()["id"]
    status = (await api.get(f"/v1/messages/{request_id}", headers=AUTH)).json()
    assert status["status"] == "unknown_or_pending"
    await make_sender().consumer.run_burst()
    status = (await api.get(f"/v1/messages/{request_id}", headers=AUTH)).json()
    assert status == {**status, "status": "sent", "msgid": "m1"}
