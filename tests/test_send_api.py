"""The send API over HTTP, against the fake WeCom: every refusal a 4xx that reaches no WeCom,
and every accepted request's state (queued, delayed, sent, dead) readable by its id."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.sender.api import MAX_BODY, create_api
from tests import helpers
from tests.sender_kit import API_KEY, AUTH, Kit, sender_kit, text

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
WRONG = {"Authorization": "Bearer wrong-key-000000000"}
TEXT = text("alice", "hi")
UPDATE: dict[str, Any] = {
    "userids": ["alice"],
    "response_code": "rc",
    "button": {"replace_name": "ok"},
}


@pytest.fixture
async def kit(redis_url: str, redis: Redis) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url) as made:
        yield made


def card(**template: Any) -> dict[str, Any]:
    return {"touser": "alice", "msgtype": "template_card", "template_card": template}


def media(content: bytes, name: str = "a.png") -> dict[str, Any]:
    return {"files": {"media": (name, content, "image/png")}}


# (method, path, request keywords, status, field named in the answer or None)
BAD: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    # POST /v1/messages
    ("POST", "/v1/messages", {"json": TEXT, "headers": {}}, 401, None),
    ("POST", "/v1/messages", {"json": TEXT, "headers": WRONG}, 403, None),
    ("POST", "/v1/messages", {"content": b"{not json"}, 422, "$"),
    ("POST", "/v1/messages", {"json": [TEXT]}, 422, "$"),
    (
        "POST",
        "/v1/messages",
        {"json": {"msgtype": "text", "text": {"content": "x"}}},
        422,
        "$.touser",
    ),
    ("POST", "/v1/messages", {"json": {**TEXT, "msgtype": "sms"}}, 422, "$.msgtype"),
    ("POST", "/v1/messages", {"json": {**TEXT, "agentid": "1000002"}}, 422, "$.agentid"),
    ("POST", "/v1/messages", {"json": {**TEXT, "agentid": 7}}, 422, "$.agentid"),
    ("POST", "/v1/messages", {"json": {**TEXT, "app": "nope"}}, 422, "$.app"),
    ("POST", "/v1/messages", {"json": {**TEXT, "app": 5}}, 422, "$.app"),
    ("POST", "/v1/messages", {"content": b" " * (MAX_BODY + 1)}, 413, None),
    ("POST", "/v1/messages", {"json": text("alice", "长" * 14_000)}, 422, "$.text.content"),
    (
        "POST",
        "/v1/messages",
        {"json": card(card_type="text_notice", main_title={"title": "t"})},
        422,
        "$.template_card.card_action",
    ),
    (
        "POST",
        "/v1/messages",
        {"json": card(card_type="button_interaction", button_list=[{"text": "b", "key": "k"}])},
        422,
        "$.template_card.task_id",
    ),
    (
        "POST",
        "/v1/messages",
        {
            "json": {
                "touser": "alice",
                "msgtype": "miniprogram_notice",
                "agentid": 1000002,
                "miniprogram_notice": {"appid": "wx1", "title": "会议提醒"},
            }
        },
        422,
        "$.agentid",
    ),
    # GET /v1/messages/{id}
    ("GET", "/v1/messages/api-never-seen", {}, 404, None),
    ("GET", "/v1/messages/api-never-seen", {"headers": {}}, 401, None),
    # POST /v1/recall
    ("POST", "/v1/recall", {"json": {}}, 422, "$.msgid"),
    ("POST", "/v1/recall", {"json": {"msgid": 42}}, 422, "$.msgid"),
    ("POST", "/v1/recall", {"json": {"msgid": " "}}, 422, "$.msgid"),
    ("POST", "/v1/recall", {"content": b"msgid=1"}, 422, "$"),
    ("POST", "/v1/recall", {"json": {"msgid": "m", "app": "nope"}}, 422, "$.app"),
    ("POST", "/v1/recall", {"json": {"msgid": "m"}, "headers": WRONG}, 403, None),
    # POST /v1/template_card/update
    ("POST", "/v1/template_card/update", {"json": {**UPDATE, "agentid": "x"}}, 422, "$.agentid"),
    ("POST", "/v1/template_card/update", {"json": {**UPDATE, "agentid": 7}}, 422, "$.agentid"),
    (
        "POST",
        "/v1/template_card/update",
        {"json": {k: v for k, v in UPDATE.items() if k != "response_code"}},
        422,
        "$.response_code",
    ),
    (
        "POST",
        "/v1/template_card/update",
        {"json": {k: v for k, v in UPDATE.items() if k != "button"}},
        422,
        "$.button",
    ),
    (
        "POST",
        "/v1/template_card/update",
        {"json": {**UPDATE, "template_card": {"card_type": "button_interaction"}}},
        422,
        "$.button",
    ),
    (
        "POST",
        "/v1/template_card/update",
        {"json": {**UPDATE, "userids": "alice"}},
        422,
        "$.userids",
    ),
    ("POST", "/v1/template_card/update", {"json": {**UPDATE, "atall": 2}}, 422, "$.atall"),
    (
        "POST",
        "/v1/template_card/update",
        {"json": {**UPDATE, "button": {"replace_name": ""}}},
        422,
        "$.button.replace_name",
    ),
    ("POST", "/v1/template_card/update", {"json": {**UPDATE, "app": "x"}}, 422, "$.app"),
    # POST /v1/media
    ("POST", "/v1/media?type=image", media(b"abc"), 422, "media"),
    ("POST", "/v1/media?type=file", media(b"12345", "a.txt"), 422, "media"),
    ("POST", "/v1/media?type=image", media(b"GIF89a-not-a-png"), 422, "media"),
    ("POST", "/v1/media", media(PNG), 422, "type"),
    ("POST", "/v1/media?type=gif", media(PNG), 422, "type"),
    ("POST", "/v1/media?type=image&app=nope", media(PNG), 422, "$.app"),
    (
        "POST",
        "/v1/media?type=image",
        {"data": {"other": "x"}, "files": {"f": ("a", PNG)}},
        422,
        "media",
    ),
    ("POST", "/v1/media?type=image", {"content": PNG}, 422, "media"),
    (
        "POST",
        "/v1/media?type=image",
        {"content": PNG, "headers": {**AUTH, "content-type": "multipart/form-data"}},
        400,  # no boundary: not multipart at all
        None,
    ),
    ("POST", "/v1/media?type=voice", media(b"#!AMR" + b"\0" * (3 << 20), "a.amr"), 413, None),
    ("POST", "/v1/media?type=image", {**media(PNG), "headers": {}}, 401, None),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    BAD,
    ids=[f"{i:02}-{m} {p.split('?')[0]} {s}" for i, (m, p, _, s, _) in enumerate(BAD)],
)
async def test_a_bad_request_is_refused_before_wecom(
    kit: Kit, method: str, path: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    request = {"headers": AUTH, **kwargs}
    response = await kit.api.request(method, path, **request)
    assert response.status_code == status, response.text
    if field is not None:
        assert response.json()["field"] == field
    assert kit.wire.paths == []  # nothing reached WeCom, not even gettoken
    assert await kit.redis.xlen("wecom:outbox") == 0


async def test_after_every_refusal_a_valid_message_is_still_delivered(kit: Kit) -> None:
    for method, path, kwargs, _, _ in BAD:
        response = await kit.api.request(method, path, **{"headers": AUTH, **kwargs})
        assert 400 <= response.status_code < 500
    response = await kit.api.post("/v1/messages", json=text("alice", "still here"), headers=AUTH)
    assert response.status_code == 202
    await kit.drain()
    assert [b["text"]["content"] for b in kit.sends()] == ["still here"]
    assert kit.wire.paths == ["/cgi-bin/gettoken", "/cgi-bin/message/send"]


async def test_states_queued_then_sent_and_recall(kit: Kit) -> None:
    request_id = (await kit.api.post("/v1/messages", json=TEXT, headers=AUTH)).json()["id"]
    state = (await kit.api.get(f"/v1/messages/{request_id}", headers=AUTH)).json()
    assert state == {"id": request_id, "status": "queued"}
    await kit.drain()
    state = (await kit.api.get(f"/v1/messages/{request_id}", headers=AUTH)).json()
    [record] = kit.fake.fake.sends
    assert state == {"id": request_id, "status": "sent", "msgid": record.msgid, "response_code": ""}
    recalled = await kit.api.post("/v1/recall", json={"msgid": record.msgid}, headers=AUTH)
    assert recalled.status_code == 200
    assert record.recalled


async def test_state_dead_carries_errcode_and_advice(kit: Kit) -> None:
    request_id = await kit.put(text("nobody-here", "x"))  # no such member: WeCom says 81013
    await kit.drain()
    state = (await kit.api.get(f"/v1/messages/{request_id}", headers=AUTH)).json()
    assert state["status"] == "dead"
    assert state["errcode"] == 81013
    assert "visible range" in state["advice"]


async def test_state_delayed_says_until_when(kit: Kit) -> None:
    ids = [await kit.put(text("alice", f"m{i}")) for i in range(31)]
    await kit.consumer.run_burst()
    state = (await kit.api.get(f"/v1/messages/{ids[-1]}", headers=AUTH)).json()
    assert state["status"] == "delayed"
    assert time.time() < state["until"] <= time.time() + 61
    assert "rate limit" in state["reason"]
    sent = (await kit.api.get(f"/v1/messages/{ids[0]}", headers=AUTH)).json()
    assert sent["status"] == "sent"


async def test_media_upload_and_card_update_reach_wecom_when_valid(kit: Kit) -> None:
    uploaded = await kit.api.post("/v1/media?type=image", headers=AUTH, **media(PNG))
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["media_id"] in kit.fake.fake.media
    button_card = card(
        card_type="button_interaction",
        task_id="t-1",
        main_title={"title": "审批"},
        button_list=[{"text": "同意", "key": "yes"}],
    )
    await kit.put(button_card)
    await kit.drain()
    [record] = kit.fake.fake.sends
    assert record.response_code
    update = {**UPDATE, "response_code": record.response_code}
    updated = await kit.api.post("/v1/template_card/update", json=update, headers=AUTH)
    assert updated.status_code == 200, updated.text
    assert record.card_update["button"] == {"replace_name": "ok"}


async def test_wecom_refusing_a_direct_call_is_502_with_advice(kit: Kit) -> None:
    response = await kit.api.post("/v1/recall", json={"msgid": "unknown"}, headers=AUTH)
    assert response.status_code == 502
    assert response.json()["errcode"] == 40035
    assert response.json()["advice"]


async def test_a_repeated_idempotency_key_answers_the_first_id(kit: Kit) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = await kit.api.post("/v1/messages", json=TEXT, headers=headers)
    again = await kit.api.post("/v1/messages", json=TEXT, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert await kit.redis.xlen("wecom:outbox") == 1
    other = await kit.api.post("/v1/messages", json=TEXT, headers=AUTH)
    assert other.json()["id"] != first.json()["id"]
    state = await kit.api.get(f"/v1/messages/{first.json()['id']}", headers=AUTH)
    assert state.json()["status"] == "queued"


async def test_the_api_is_off_without_a_key(redis_url: str, redis: Redis) -> None:
    app = create_api(helpers.settings(redis_url), redis, clients={})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        response = await client.post("/v1/messages", json=TEXT, headers=AUTH)
    assert response.status_code == 404
    assert await redis.xlen("wecom:outbox") == 0


async def test_redis_down_is_503(redis_url: str) -> None:
    settings = helpers.settings(redis_url, SENDER_API_KEY=API_KEY)
    gone = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)  # nothing listens
    app = create_api(settings, gone, clients={})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        sent = await client.post("/v1/messages", json=TEXT, headers=AUTH)
        state = await client.get("/v1/messages/api-x", headers=AUTH)
    await gone.aclose()
    assert (sent.status_code, state.status_code) == (503, 503)
    assert "Redis" in sent.json()["error"]
