"""WeComClient against a stand-in qyapi (httpx.MockTransport): bodies, errcodes, token retry."""

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

APP = AppSettings(name="default", corp_id="wwcorp", agent_id=1000002, secret=Secret("corp-s3cret"))
Answer = dict[str, Any] | httpx.Response | Exception


class FakeQyapi:
    """Answers per path from a queue (the last answer repeats) and records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: dict[str, list[Answer]] = {
            "/cgi-bin/gettoken": [{"errcode": 0, "access_token": "fetched-1", "expires_in": 7200}],
            "/cgi-bin/message/send": [{"errcode": 0, "errmsg": "ok", "msgid": "m-1"}],
        }

    def answer(self, path: str, *answers: Answer) -> None:
        self.answers[f"/cgi-bin/{path}"] = list(answers)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == f"/cgi-bin/{path}"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.answers.get(request.url.path, [{"errcode": 0, "errmsg": "ok"}])
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)


class Tokens:
    """A TokenSource that hands out tok-1, then tok-2 after tok-1 is invalidated, and so on."""

    def __init__(self) -> None:
        self.n = 1
        self.invalidated: list[str] = []

    async def get(self) -> str:
        return f"tok-{self.n}"

    async def invalidate(self, failed: str) -> None:
        self.invalidated.append(failed)
        if failed == f"tok-{self.n}":
            self.n += 1


@pytest.fixture
def qyapi() -> FakeQyapi:
    return FakeQyapi()


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
async def client(qyapi: FakeQyapi, tokens: Tokens) -> AsyncIterator[WeComClient]:
    async with WeComClient(
        APP, token_source=tokens, base_url="http://qyapi.test", transport=httpx.MockTransport(qyapi)
    ) as c:
        yield c


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


TEXT = {"touser": "zhangsan|lisi", "msgtype": "text", "text": {"content": "你好"}}


async def test_send_posts_json_with_the_apps_agentid_and_the_token_in_the_query(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    result = await client.send(TEXT)

    (request,) = qyapi.requests
    assert request.method == "POST"
    assert request.url.path == "/cgi-bin/message/send"
    assert request.url.params["access_token"] == "tok-1"
    assert request.headers["content-type"].startswith("application/json")
    assert body(request) == {**TEXT, "agentid": 1000002}
    assert "你好".encode() in request.content  # UTF-8 on the wire, not \\u escapes
    assert result.msgid == "m-1"
    assert not result.partial


async def test_send_accepts_encoded_bytes_and_an_agentid_given_as_text(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    await client.send(json.dumps({**TEXT, "agentid": "1000002"}).encode())
    assert body(qyapi.requests[0])["agentid"] == 1000002


async def test_send_refuses_another_apps_agentid_without_calling_wecom(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    with pytest.raises(SchemaError) as caught:
        await client.send({**TEXT, "agentid": 1000099})
    assert caught.value.field == "$.agentid"
    with pytest.raises(SchemaError):
        await client.send(b"not json")
    assert qyapi.requests == []


async def test_partial_failure_lists_the_refused_recipients(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    qyapi.answer(
        "message/send",
        {
            "errcode": 0,
            "errmsg": "ok",
            "invaliduser": "ghost|gone",
            "invalidparty": "42",
            "invalidtag": "",
            "unlicenseduser": "trial",
            "msgid": "m-7",
            "response_code": "rc-7",
        },
    )
    result = await client.send(TEXT)
    assert result.partial
    assert result.invaliduser == ["ghost", "gone"]
    assert result.invalidparty == ["42"]
    assert result.invalidtag == []
    assert result.unlicenseduser == ["trial"]
    assert (result.msgid, result.response_code) == ("m-7", "rc-7")


# Reference §9: code -> (class, action).
T = (TokenInvalidError, "refresh_token")
B_RATE = (RateLimitedError, "backoff")
B_RETRY = (RetryableAPIError, "backoff")
N = (PermanentAPIError, "permanent")
SECTION_9 = {
    -1: B_RETRY, 6000: B_RETRY, 40001: N, 40003: N, 40007: N, 40008: N, 40013: N, 40014: T,
    40031: N, 40032: N, 40035: N, 40058: N, 40063: N, 40056: N, 41001: T, 41011: N, 41016: N,
    41033: N, 42001: T, 42009: N, 44004: N, 45002: N, 45008: N, 45009: B_RATE, 45033: B_RATE,
    48002: N, 60011: N, 60020: N, 81013: N, 82001: N, 301002: N,
}  # fmt: skip


@pytest.mark.parametrize("errcode", sorted(SECTION_9))
async def test_every_section_9_errcode_raises_its_class(
    errcode: int, client: WeComClient, qyapi: FakeQyapi
) -> None:
    cls, action = SECTION_9[errcode]
    qyapi.answer("message/send", {"errcode": errcode, "errmsg": "some text"})

    with pytest.raises(WeComAPIError) as caught:
        await client.send(TEXT)

    error = caught.value
    assert type(error) is cls and classify(errcode) is cls
    assert (error.errcode, error.errmsg, error.action) == (errcode, "some text", action)
    assert error.advice and str(errcode) in str(error)
    # Only token errors are retried (once); everything else reaches WeCom exactly once.
    assert len(qyapi.calls("message/send")) == (2 if cls is TokenInvalidError else 1)
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


async def test_60020_advice_names_the_ip_from_errmsg(client: WeComClient, qyapi: FakeQyapi) -> None:
    errmsg = (
        "not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.9, "
        "more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
    )
    qyapi.answer("message/send", {"errcode": 60020, "errmsg": errmsg})
    with pytest.raises(PermanentAPIError) as caught:
        await client.send(TEXT)
    assert "203.0.113.9" in caught.value.advice
    assert "企业可信IP" in caught.value.advice


async def test_expired_token_mid_run_is_refreshed_once_and_the_request_retried_once(
    redis: Redis, qyapi: FakeQyapi
) -> None:
    qyapi.answer(
        "gettoken",
        {"errcode": 0, "access_token": "fetched-1", "expires_in": 7200},
        {"errcode": 0, "access_token": "fetched-2", "expires_in": 7200},
    )
    qyapi.answer(
        "message/send",
        {"errcode": 0, "errmsg": "ok", "msgid": "m-1"},
        {"errcode": 42001, "errmsg": "access_token expired"},
        {"errcode": 0, "errmsg": "ok", "msgid": "m-2"},
    )
    transport = httpx.MockTransport(qyapi)

    def cache(fetch: Callable[[], Any]) -> TokenCache:
        return TokenCache(redis, fetch, corp_id=APP.corp_id, agent_id=APP.agent_id)

    async with WeComClient(
        APP, token_source=cache, base_url="http://qyapi.test", transport=transport
    ) as client:
        first = await client.send(TEXT)
        second = await client.send(TEXT)

    assert (first.msgid, second.msgid) == ("m-1", "m-2")
    assert len(qyapi.calls("gettoken")) == 2
    sent_with = [r.url.params["access_token"] for r in qyapi.calls("message/send")]
    assert sent_with == ["fetched-1", "fetched-1", "fetched-2"]
    assert await redis.get("wecom:token:{wwcorp:1000002}") == b"fetched-2"
    gettoken = qyapi.calls("gettoken")[0].url.params
    assert (gettoken["corpid"], gettoken["corpsecret"]) == ("wwcorp", "corp-s3cret")


async def test_a_second_token_failure_raises(
    client: WeComClient, qyapi: FakeQyapi, tokens: Tokens
) -> None:
    qyapi.answer("message/send", {"errcode": 40014, "errmsg": "invalid access_token"})
    with pytest.raises(TokenInvalidError):
        await client.send(TEXT)
    sent_with = [r.url.params["access_token"] for r in qyapi.calls("message/send")]
    assert sent_with == ["tok-1", "tok-2"]
    assert tokens.invalidated == ["tok-1"]


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
    def handler(request: httpx.Request) -> httpx.Response:
        answer = make_answer(request)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    class Secretive(Tokens):
        async def get(self) -> str:
            return "AT-very-secret-token"

    transport = httpx.MockTransport(handler)
    async with WeComClient(APP, token_source=Secretive(), transport=transport) as client:
        with pytest.raises(WeComUnavailableError) as caught:
            await client.send(TEXT)
        with pytest.raises(WeComUnavailableError) as caught_gettoken:
            await client.gettoken()

    assert caught.value.action == "backoff"
    assert caught.value.endpoint == "message/send"
    _leak_free(caught.value, "AT-very-secret-token")
    _leak_free(caught_gettoken.value, "corp-s3cret")


async def test_httpx_request_logs_mask_the_token(
    client: WeComClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        await client.send(TEXT)
    assert "message/send" in caplog.text
    assert "tok-1" not in caplog.text


async def test_media_upload_is_multipart_with_field_media_and_the_filename(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    qyapi.answer(
        "media/upload",
        {"errcode": 0, "errmsg": "", "type": "file", "media_id": "MID", "created_at": "1"},
    )
    media_id = await client.upload_media("file", "report.pdf", b"%PDF-1.7 data", "application/pdf")

    (request,) = qyapi.requests
    assert media_id == "MID"
    assert request.url.params["type"] == "file"
    assert request.url.params["access_token"] == "tok-1"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    content = request.content
    assert b'name="media"; filename="report.pdf"' in content
    assert b"Content-Type: application/pdf" in content
    assert b"%PDF-1.7 data" in content


async def test_media_upload_refuses_what_wecom_would_refuse(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    with pytest.raises(SchemaError):
        await client.upload_media("file", "tiny.txt", b"12345", "text/plain")  # must be > 5 bytes
    with pytest.raises(SchemaError):
        await client.upload_media("gif", "a.gif", b"GIF89a....", "image/gif")
    assert qyapi.requests == []


async def test_recall_and_update_template_card_bodies(
    client: WeComClient, qyapi: FakeQyapi
) -> None:
    qyapi.answer("message/update_template_card", {"errcode": 0, "invaliduser": "gone"})
    await client.recall("m-1")
    result = await client.update_template_card(
        {"userids": ["zhangsan"], "response_code": "rc-1", "button": {"replace_name": "已处理"}}
    )

    recall, update = qyapi.requests
    assert recall.url.path == "/cgi-bin/message/recall"
    assert body(recall) == {"msgid": "m-1"}
    assert update.url.path == "/cgi-bin/message/update_template_card"
    assert body(update) == {
        "userids": ["zhangsan"],
        "response_code": "rc-1",
        "button": {"replace_name": "已处理"},
        "agentid": 1000002,
    }
    assert result.invaliduser == ["gone"]


async def test_gettoken_returns_token_and_lifetime_and_needs_a_secret(qyapi: FakeQyapi) -> None:
    transport = httpx.MockTransport(qyapi)
    async with WeComClient(APP, token_source=Tokens(), transport=transport) as client:
        assert await client.gettoken() == ("fetched-1", 7200)
    no_secret = AppSettings(name="hr", corp_id="wwcorp", agent_id=7)
    async with WeComClient(no_secret, token_source=Tokens(), transport=transport) as client:
        with pytest.raises(ConfigError, match="WECOM_SECRET"):
            await client.gettoken()


async def test_gettoken_errors_are_typed(qyapi: FakeQyapi) -> None:
    qyapi.answer("gettoken", {"errcode": 40001, "errmsg": "invalid credential"})
    async with WeComClient(
        APP, token_source=Tokens(), transport=httpx.MockTransport(qyapi)
    ) as client:
        with pytest.raises(PermanentAPIError) as caught:
            await client.gettoken()
    assert caught.value.endpoint == "gettoken"
    assert "WECOM_SECRET" in caught.value.advice


async def test_a_closed_client_refuses_use(qyapi: FakeQyapi) -> None:
    client = WeComClient(APP, token_source=Tokens(), transport=httpx.MockTransport(qyapi))
    async with client:
        await client.send(TEXT)
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(TEXT)
    with pytest.raises(RuntimeError):
        async with client:
            pass
    assert len(qyapi.requests) == 1
