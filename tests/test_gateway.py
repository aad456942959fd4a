"""The sender's gateway over HTTP, against the fake WeCom: passthrough, allowlist, paths, the
per-corp budget, media, token refresh; and ``ctx.wecom`` (WeComGateway) on top of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.middleware.gzip import GZipMiddleware

from devkit.fakewecom.api import sniff_type
from shared.config import load_settings
from shared.errors import ConfigError
from shared.wecom.client import WeComClient
from shared.wecom.errors import PermanentAPIError
from shared.wecom.gateway import GatewayRefusedError, WeComGateway, gateway_of
from tests.inprocess_wecom import InProcessWeCom
from tests.sender_kit import API_KEY, AUTH, Kit, sender_kit

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
WRONG = {"Authorization": "Bearer wrong-key-000000000"}


@pytest.fixture
async def kit(redis_url: str, redis: Redis) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url) as made:
        yield made


def reached(kit: Kit, api: str) -> int:
    """How many calls to cgi-bin/<api> reached the fake WeCom."""
    return kit.fake.fake.api_calls.get(api, 0)


def gettokens(kit: Kit) -> int:
    return kit.fake.fake.gettoken_calls["default"]


def stored_image(kit: Kit, app: str = "default") -> str:
    """A member's image as the fake keeps it (as if sent in the chat); its media_id."""
    return kit.fake.fake.store_media(app, "image", "cat.png", PNG, sniff_type(PNG)).media_id


async def test_user_get_comes_back_as_wecom_answered_without_the_token(kit: Kit) -> None:
    answer = await kit.api.get("/v1/wecom/user/get", params={"userid": "alice"}, headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["errcode"] == 0 and body["userid"] == "alice" and body["name"] == "Alice"
    token = kit.fake.fake.current["default"].value
    assert token not in answer.text and "access_token" not in answer.text
    # WeCom's refusals come back as they are too (errcode included), with HTTP 200
    missing = await kit.api.get("/v1/wecom/user/get", params={"userid": "nobody"}, headers=AUTH)
    assert missing.status_code == 200 and missing.json()["errcode"] == 60111


async def test_auth_allowlist_and_paths_refused_before_wecom(kit: Kit) -> None:
    url = "/v1/wecom/user/get?userid=alice"
    assert (await kit.api.get(url)).status_code == 401
    assert (await kit.api.get(url, headers=WRONG)).status_code == 403
    refused = await kit.api.get("/v1/wecom/user/delete?userid=alice", headers=AUTH)
    assert refused.status_code == 403
    assert "SENDER_GATEWAY_APIS" in refused.json()["error"]
    for bad in ("User/Get", "user/get%3Fx=1", "user//get", "http:%2F%2Fevil.example/x", "%2E%2E/x"):
        answer = await kit.api.get(f"/v1/wecom/{bad}", headers=AUTH)
        assert answer.status_code == 400, bad
    unknown_app = await kit.api.get(url, headers={**AUTH, "X-WeCom-App": "nope"})
    assert unknown_app.status_code == 422 and unknown_app.json()["field"] == "X-WeCom-App"
    bad_body = await kit.api.post("/v1/wecom/user/list_id", content=b"[1]", headers=AUTH)
    assert bad_body.status_code == 422
    assert [p for p in kit.wire.paths if not p.endswith("/gettoken")] == []


async def test_post_body_and_other_app(kit: Kit) -> None:
    answer = await kit.api.post(
        "/v1/wecom/user/list_id", json={"limit": 2}, headers={**AUTH, "X-WeCom-App": "hr"}
    )
    body = answer.json()
    assert body["errcode"] == 0 and len(body["dept_user"]) == 2 and body["next_cursor"] == "2"
    assert kit.fake.fake.gettoken_calls["hr"] == 1 and gettokens(kit) == 0


async def test_media_get_answers_the_file_with_its_type_and_name(kit: Kit) -> None:
    media_id = stored_image(kit)
    answer = await kit.api.get("/v1/wecom/media/get", params={"media_id": media_id}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["content-type"] == "image/png"
    assert 'filename="cat.png"' in answer.headers["content-disposition"]
    gone = await kit.api.get("/v1/wecom/media/get", params={"media_id": "x"}, headers=AUTH)
    assert gone.json()["errcode"] == 40007


async def test_one_gettoken_serves_every_call_and_a_revoked_token_one_more(kit: Kit) -> None:
    for _ in range(3):
        await kit.api.get("/v1/wecom/department/list", headers=AUTH)
    assert gettokens(kit) == 1
    kit.fake.fake.revoke_tokens()
    answer = await kit.api.get("/v1/wecom/department/list", headers=AUTH)
    assert answer.json()["errcode"] == 0
    assert gettokens(kit) == 2


async def test_the_corps_budget_per_api_answers_429_with_retry_after(
    redis_url: str, redis: Redis
) -> None:
    async with sender_kit(redis_url, env={"SENDER_GATEWAY_PER_MINUTE": "2"}) as kit:
        for _ in range(2):
            answer = await kit.api.get("/v1/wecom/tag/list", headers=AUTH)
            assert answer.status_code == 200
        limited = await kit.api.get("/v1/wecom/tag/list", headers=AUTH)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "SENDER_GATEWAY_PER_MINUTE" in limited.json()["error"]
        assert reached(kit, "tag/list") == 2
        other_api = await kit.api.get("/v1/wecom/department/list", headers=AUTH)
        assert other_api.status_code == 200  # counted per API


def gateway(kit: Kit) -> WeComGateway:
    transport = httpx.ASGITransport(app=kit.api._transport.app)  # type: ignore[attr-defined]
    return WeComGateway("http://sender", API_KEY, transport=transport)


async def test_ctx_wecom_reads_downloads_and_raises_typed_errors(kit: Kit) -> None:
    async with gateway(kit) as wecom:
        user = await wecom.get("user/get", userid="alice")
        assert user["name"] == "Alice"
        await wecom.get("user/get", userid="alice")
        assert reached(kit, "user/get") == 1  # the second came from the short cache
        listed = await wecom.post("user/list_id", {"limit": 1})
        assert len(listed["dept_user"]) == 1
        media = await wecom.download(stored_image(kit))
        assert media.content == PNG and media.content_type == "image/png"
        assert media.filename == "cat.png"
        with pytest.raises(PermanentAPIError) as missing:
            await wecom.get("user/get", userid="nobody")
        assert missing.value.errcode == 60111
        with pytest.raises(PermanentAPIError) as expired:
            await wecom.download("no-such-media")
        assert expired.value.errcode == 40007 and "3 days" in expired.value.advice
        with pytest.raises(GatewayRefusedError) as refused:
            await wecom.post("user/delete", {"userid": "alice"})
        assert refused.value.status == 403 and reached(kit, "user/delete") == 0
        hr = await wecom.for_app("hr").get("agent/get", agentid=1000003)
        assert hr["agentid"] == 1000003


async def test_media_older_than_three_days_is_a_clear_error(redis_url: str, redis: Redis) -> None:
    now = [time.time()]
    async with sender_kit(redis_url, clock=lambda: now[0]) as kit, gateway(kit) as wecom:
        media_id = stored_image(kit)
        now[0] += 3 * 86_400 + 1
        with pytest.raises(PermanentAPIError) as expired:
            await wecom.download(media_id)
        assert expired.value.errcode == 40007


def test_ctx_wecom_without_sender_url_names_the_variables() -> None:
    class Bare:
        settings = load_settings({})

    with pytest.raises(ConfigError) as missing:
        gateway_of(Bare(), "default")
    assert "SENDER_URL" in str(missing.value) and "SENDER_API_KEY" in str(missing.value)


def test_settings_refuse_a_bad_allowlist_and_proxy() -> None:
    with pytest.raises(ConfigError, match="SENDER_GATEWAY_APIS"):
        load_settings({"SENDER_GATEWAY_APIS": "user/get,../cgi"})
    with pytest.raises(ConfigError, match="WECOM_HTTPS_PROXY"):
        load_settings({"WECOM_HTTPS_PROXY": "socks://x"})
    assert load_settings({"HTTPS_PROXY": "http://p:3128"}).wecom_proxy == "http://p:3128"
    chosen = load_settings({"SENDER_GATEWAY_APIS": "user/get, /tag/list"}).gateway_apis
    assert chosen == {"user/get", "tag/list"}


async def test_a_compressed_answer_is_passed_on_decoded(fake_wecom: InProcessWeCom) -> None:
    """WeCom may gzip its answers; the passthrough hands on the decoded bytes."""
    zipped = httpx.ASGITransport(app=GZipMiddleware(fake_wecom.app, minimum_size=10))
    client = WeComClient(
        fake_wecom.settings,
        token_source=lambda fetch: StaticToken(fake_wecom.token()),
        base_url=fake_wecom.base_url,
        transport=zipped,
    )
    async with client:
        answer = await client.call("GET", "user/simplelist", params={"department_id": "1"})
    assert "content-encoding" not in answer.headers
    assert [u["userid"] for u in answer.json()["userlist"]][:2] == ["zhangsan", "lisi"]


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def get(self) -> str:
        return self.token

    async def invalidate(self, failed: str) -> None:
        raise AssertionError("the token is valid")


async def test_media_past_the_size_limit_is_refused_with_502(kit: Kit) -> None:
    huge = PNG + bytes(20 << 20)
    media_id = kit.fake.fake.store_media("default", "file", "big.bin", huge, "x/y").media_id
    answer = await kit.api.get("/v1/wecom/media/get", params={"media_id": media_id}, headers=AUTH)
    assert answer.status_code == 502 and "larger than" in answer.json()["error"]
