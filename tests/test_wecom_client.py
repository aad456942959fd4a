"""WeComClient against the project's fake WeCom in-process: bodies, errcodes, token retry.

The fake (devkit.fakewecom) runs behind httpx.ASGITransport (the ``fake_wecom`` fixture); errcodes
are injected through its fault API. Only failures below HTTP (timeouts, resets, a proxy's 502)
are simulated with a MockTransport, because they are the network's, not WeCom's.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.config import AppSettings, Secret
from shared.errors import ConfigError, SchemaError
from shared.wecom import (
    PermanentAPIError,
    RateLimitedError,
    RetryableAPIError,
    TokenCache,
    TokenInvalidError,
    WeComAPIError,
    WeComClient,
    WeComUnavailableError,
    classify,
    raise_for_errcode,
)
from tests.inprocess_wecom import InProcessWeCom

Answer = httpx.Response | Exception


class Tokens:
    """A TokenSource handing out the fake's current token; invalidating one makes the fake
    revoke it (what happened at WeCom when a token is refused), so the next get is a new one."""

    def __init__(self, fake: InProcessWeCom) -> None:
        self.fake = fake
        self.invalidated: list[str] = []

    async def get(self) -> str:
        return self.fake.token()

    async def invalidate(self, failed: str) -> None:
        self.invalidated.append(failed)
        await self.fake.fault(revoke_tokens=True)


@pytest.fixture
def tokens(fake_wecom: InProcessWeCom) -> Tokens:
    return Tokens(fake_wecom)


def connect(fake: InProcessWeCom, token_source: Any, app: AppSettings | None = None) -> WeComClient:
    return WeComClient(
        app or fake.settings,
        token_source=token_source,
        base_url=fake.base_url,
        transport=fake.transport,
    )


@pytest.fixture
async def client(fake_wecom: InProcessWeCom, tokens: Tokens) -> AsyncIterator[WeComClient]:
    async with connect(fake_wecom, tokens) as c:
        yield c


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


TEXT = {"touser": "zhangsan|lisi", "msgtype": "text", "text": {"content": "你好"}}
BUTTON_CARD = {
    "touser": "zhangsan",
    "msgtype": "template_card",
    "template_card": {
        "card_type": "button_interaction",
        "task_id": "task-1",
        "main_title": {"title": "Approve?"},
        "button_list": [{"text": "Yes", "key": "yes"}],
    },
}


async def test_send_posts_json_with_the_apps_agentid_and_the_token_in_the_query(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    result = await client.send(TEXT)

    (request,) = fake_wecom.calls("message/send")
    assert request.method == "POST"
    assert request.url.params["access_token"] == fake_wecom.token()
    assert request.headers["content-type"].startswith("application/json")
    assert body(request) == {**TEXT, "agentid": 1000002}
    assert "你好".encode() in request.content  # UTF-8 on the wire, not \\u escapes
    (record,) = fake_wecom.sends
    assert record.status == "delivered" and record.delivered == ["zhangsan", "lisi"]
    assert result.msgid == record.msgid and result.msgid
    assert not result.partial


async def test_send_accepts_encoded_bytes_and_an_agentid_given_as_text(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    await client.send(json.dumps({**TEXT, "agentid": "1000002"}).encode())
    assert body(fake_wecom.requests[0])["agentid"] == 1000002
    assert fake_wecom.sends[0].status == "delivered"


async def test_send_refuses_another_apps_agentid_without_calling_wecom(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    with pytest.raises(SchemaError) as caught:
        await client.send({**TEXT, "agentid": 1000099})
    assert caught.value.field == "$.agentid"
    with pytest.raises(SchemaError):
        await client.send(b"not json")
    assert fake_wecom.requests == []


async def test_partial_failure_lists_the_refused_recipients() -> None:
    fake = InProcessWeCom(members=("zhangsan", "trial"), unlicensed=frozenset({"trial"}))
    async with connect(fake, Tokens(fake)) as client:
        result = await client.send({**TEXT, "touser": "zhangsan|Ghost|gone|trial", "toparty": "42"})
    assert result.partial
    assert result.invaliduser == ["ghost", "gone"]  # lower-cased, as WeCom lists them
    assert result.invalidparty == ["42"]
    assert result.invalidtag == []
    assert result.unlicenseduser == ["trial"]
    assert result.msgid == fake.sends[0].msgid and not result.response_code
    assert fake.sends[0].delivered == ["zhangsan"]


async def test_an_interactive_card_answer_carries_its_response_code(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    result = await client.send(BUTTON_CARD)
    assert result.response_code and result.response_code == fake_wecom.sends[0].response_code


# WeCom's documented errcodes (docs/architecture.md): code -> (class, action).
T = (TokenInvalidError, "refresh_token")
B_RATE = (RateLimitedError, "backoff")
B_RETRY = (RetryableAPIError, "backoff")
N = (PermanentAPIError, "permanent")
ERRCODES = {
    -1: B_RETRY, 6000: B_RETRY, 40001: N, 40003: N, 40007: N, 40008: N, 40013: N, 40014: T,
    40031: N, 40032: N, 40035: N, 40058: N, 40063: N, 40056: N, 41001: T, 41011: N, 41016: N,
    41033: N, 42001: T, 42009: N, 44004: N, 45002: N, 45008: N, 45009: B_RATE, 45033: B_RATE,
    48002: N, 60011: N, 60020: N, 81013: N, 82001: N, 301002: N,
}  # fmt: skip


@pytest.mark.parametrize("errcode", sorted(ERRCODES))
async def test_every_documented_errcode_raises_its_class(
    errcode: int, client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    cls, action = ERRCODES[errcode]
    await fake_wecom.fault(errcode=errcode, errmsg="some text", count=2, path="message/send")

    with pytest.raises(WeComAPIError) as caught:
        await client.send(TEXT)

    error = caught.value
    assert type(error) is cls and classify(errcode) is cls
    assert (error.errcode, error.errmsg, error.action) == (errcode, "some text", action)
    assert error.advice and str(errcode) in str(error)
    # Only token errors are retried (once); everything else reaches WeCom exactly once.
    assert len(fake_wecom.calls("message/send")) == (2 if cls is TokenInvalidError else 1)
    assert [r.status for r in fake_wecom.sends] == ["faulted"] * len(fake_wecom.sends)
    if action == "backoff":
        assert error.retry_after is not None and error.retry_after > 0


def test_advice_names_what_to_fix() -> None:
    def advice(errcode: int, errmsg: str = "") -> str:
        with pytest.raises(WeComAPIError) as caught:
            raise_for_errcode({"errcode": errcode, "errmsg": errmsg})
        return caught.value.advice

    assert "WECOM_AGENT_ID" in advice(40056)
    assert "可见范围" in advice(81013) and "可见范围" in advice(82001)
    assert "API权限" in advice(48002)
    assert "WECOM_SECRET" in advice(40001) and "WECOM_CORP_ID" in advice(40013)
    assert "empty" in advice(44004) and "2048" in advice(45002)
    assert "query?e=99999" in advice(99999)


def test_errcode_zero_or_absent_is_success_and_errmsg_is_never_judged() -> None:
    raise_for_errcode({"errcode": 0, "errmsg": "failed?"})
    raise_for_errcode({"access_token": "x", "expires_in": 7200})
    with pytest.raises(TokenInvalidError):
        raise_for_errcode({"errcode": "42001", "errmsg": "ok"})


async def test_60020_advice_names_the_ip_from_errmsg(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    # The fake writes errmsg as WeCom does, naming the caller's address.
    await fake_wecom.fault(errcode=60020, path="message/send")
    with pytest.raises(PermanentAPIError) as caught:
        await client.send(TEXT)
    assert "from ip: 127.0.0.1" in caught.value.errmsg
    assert "127.0.0.1" in caught.value.advice
    assert "企业可信IP" in caught.value.advice


async def test_a_revoked_token_mid_run_is_refreshed_once_and_the_request_retried_once(
    redis: Redis, fake_wecom: InProcessWeCom
) -> None:
    def cache(fetch: Callable[[], Any]) -> TokenCache:
        return TokenCache(redis, fetch, corp_id="wwcorp", agent_id=1000002)

    async with connect(fake_wecom, cache) as client:
        first = await client.send(TEXT)
        await fake_wecom.fault(revoke_tokens=True)  # WeCom ends the token early
        second = await client.send(TEXT)

    assert first.msgid and second.msgid and first.msgid != second.msgid
    assert fake_wecom.gettoken_calls == 2
    sent_with = [r.url.params["access_token"] for r in fake_wecom.calls("message/send")]
    assert sent_with[0] == sent_with[1] != sent_with[2]
    assert [r.errcode for r in fake_wecom.sends] == [0, 42001, 0]
    assert await redis.get("wecom:token:{wwcorp:1000002}") == sent_with[2].encode()
    gettoken = fake_wecom.calls("gettoken")[0].url.params
    assert (gettoken["corpid"], gettoken["corpsecret"]) == ("wwcorp", "corp-s3cret")


async def test_a_second_token_failure_raises(
    client: WeComClient, fake_wecom: InProcessWeCom, tokens: Tokens
) -> None:
    await fake_wecom.fault(errcode=40014, count=2, path="message/send")
    with pytest.raises(TokenInvalidError):
        await client.send(TEXT)
    sent_with = [r.url.params["access_token"] for r in fake_wecom.calls("message/send")]
    assert len(sent_with) == 2 and sent_with[0] != sent_with[1]
    assert tokens.invalidated == sent_with[:1]


def _leak_free(error: BaseException, *secrets: str) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize(
    "make_answer",
    [
        lambda req: httpx.ReadTimeout(f"timed out reading {req.url}", request=req),
        lambda req: httpx.ConnectTimeout("connect timed out", request=req),
        lambda req: httpx.ConnectError(f"refused: {req.url}", request=req),
        lambda req: httpx.RemoteProtocolError(f"peer closed for {req.url}", request=req),
        lambda req: httpx.Response(502, text=f"bad gateway for {req.url}"),
        lambda req: httpx.Response(200, text="<html>maintenance</html>"),
    ],
    ids=["read-timeout", "connect-timeout", "connect-error", "protocol", "502", "not-json"],
)
async def test_transport_failures_are_unavailable_and_never_show_the_token(
    make_answer: Callable[[httpx.Request], Answer],
) -> None:
    # The network (or a proxy in front of qyapi) failing: below what the fake WeCom plays.
    def network(request: httpx.Request) -> httpx.Response:
        answer = make_answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Secretive:
        async def get(self) -> str:
            return "AT-very-secret-token"

        async def invalidate(self, failed: str) -> None:
            raise AssertionError("a transport failure must not invalidate the token")

    app = AppSettings(
        name="default", corp_id="wwcorp", agent_id=1000002, secret=Secret("corp-s3cret")
    )
    transport = httpx.MockTransport(network)
    async with WeComClient(app, token_source=Secretive(), transport=transport) as client:
        with pytest.raises(WeComUnavailableError) as caught:
            await client.send(TEXT)
        with pytest.raises(WeComUnavailableError) as caught_gettoken:
            await client.gettoken()

    assert caught.value.action == "backoff"
    assert caught.value.endpoint == "message/send"
    _leak_free(caught.value, "AT-very-secret-token")
    _leak_free(caught_gettoken.value, "corp-s3cret")


async def test_httpx_request_logs_mask_the_token(
    client: WeComClient, fake_wecom: InProcessWeCom, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        await client.send(TEXT)
    assert "message/send" in caplog.text
    assert fake_wecom.token() not in caplog.text


async def test_media_upload_is_multipart_with_field_media_and_the_filename(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    media_id = await client.upload_media("file", "report.pdf", b"%PDF-1.7 data", "application/pdf")

    (request,) = fake_wecom.requests
    assert request.url.params["type"] == "file"
    assert request.url.params["access_token"] == fake_wecom.token()
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    content = request.content
    assert b'name="media"; filename="report.pdf"' in content
    assert b"Content-Type: application/pdf" in content
    stored = fake_wecom.state.media[media_id]
    assert (stored.type, stored.filename, stored.size) == ("file", "report.pdf", 13)
    sent = await client.send({"touser": "lisi", "msgtype": "file", "file": {"media_id": media_id}})
    assert sent.msgid and fake_wecom.sends[-1].delivered == ["lisi"]


async def test_media_upload_refuses_what_wecom_would_refuse(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    with pytest.raises(SchemaError):
        await client.upload_media("file", "tiny.txt", b"12345", "text/plain")  # must be > 5 bytes
    with pytest.raises(SchemaError):
        await client.upload_media("gif", "a.gif", b"GIF89a....", "image/gif")
    assert fake_wecom.requests == []


async def test_recall_and_update_template_card_bodies(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    sent = await client.send(BUTTON_CARD)
    assert sent.msgid and sent.response_code
    await client.recall(sent.msgid)
    update = {"userids": ["zhangsan"], "response_code": sent.response_code}
    result = await client.update_template_card({**update, "button": {"replace_name": "已处理"}})

    recall, update_request = fake_wecom.requests[-2:]
    assert recall.url.path == "/cgi-bin/message/recall"
    assert body(recall) == {"msgid": sent.msgid}
    assert update_request.url.path == "/cgi-bin/message/update_template_card"
    expected = {**update, "button": {"replace_name": "已处理"}, "agentid": 1000002}
    assert body(update_request) == expected
    (record,) = fake_wecom.sends
    assert record.recalled and record.card_update == expected
    assert not result.partial
    with pytest.raises(PermanentAPIError) as caught:  # a response_code is single use
        await client.update_template_card({**update, "button": {"replace_name": "again"}})
    assert caught.value.errcode == 40035


async def test_gettoken_returns_token_and_lifetime_and_needs_a_secret(
    fake_wecom: InProcessWeCom, tokens: Tokens
) -> None:
    async with connect(fake_wecom, tokens) as client:
        token, expires_in = await client.gettoken()
    assert (token, expires_in) == (fake_wecom.token(), 7200)
    no_secret = AppSettings(name="hr", corp_id="wwcorp", agent_id=7)
    async with connect(fake_wecom, tokens, no_secret) as client:
        with pytest.raises(ConfigError, match="WECOM_SECRET"):
            await client.gettoken()


async def test_gettoken_errors_are_typed(fake_wecom: InProcessWeCom, tokens: Tokens) -> None:
    wrong = AppSettings(name="default", corp_id="wwcorp", agent_id=1000002, secret=Secret("nope"))
    async with connect(fake_wecom, tokens, wrong) as client:
        with pytest.raises(PermanentAPIError) as caught:
            await client.gettoken()
    assert (caught.value.endpoint, caught.value.errcode) == ("gettoken", 40001)
    assert "WECOM_SECRET" in caught.value.advice
    assert fake_wecom.state.gettoken_failures == 1


async def test_a_closed_client_refuses_use(fake_wecom: InProcessWeCom, tokens: Tokens) -> None:
    client = connect(fake_wecom, tokens)
    async with client:
        await client.send(TEXT)
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(TEXT)
    with pytest.raises(RuntimeError):
        async with client:
            pass
    assert len(fake_wecom.requests) == 1
