"""The fake WeCom on a real uvicorn server: qyapi answers, silent drops, faults, callbacks, page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.fakewecom import FakeApp, FakeConfig, FakeState, create_app
from devkit.fakewecom.__main__ import config_from_env
from shared.config import Secret
from shared.errors import ConfigError
from shared.protocol.crypto import CallbackCrypto

CORP = "wwfakecorp0001"
APPS = {
    "default": (1000002, "secret-default-0001", "TokenDefault01", "a" * 21 + "B" * 22),
    "hr": (1000003, "secret-hr-0002", "TokenHr02", "c" * 21 + "D" * 22),
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class Clock:
    """A clock tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class Servers:
    """Real uvicorn servers on free ports in this event loop, stopped together at the end."""

    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(self, app: Any) -> str:
        config = uvicorn.Config(
            app, port=0, log_config=None, access_log=False, timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        self.running.append((server, task))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        for server, _ in self.running:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self.running))


@dataclass
class Receiver:
    """The app's side: decrypts each callback with CallbackCrypto and answers as told."""

    statuses: deque[int] = field(default_factory=deque)  # next answers; 200 when empty
    hang: int = 0  # how many next POSTs get no answer until released
    echo_suffix: bytes = b""  # a badly behaved GET handshake answers echo + this
    plaintexts: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        cryptos = {name: CallbackCrypto(v[2], v[3], CORP) for name, v in APPS.items()}

        async def callback(request: Request) -> Response:
            crypto = cryptos[request.path_params.get("app", "default")]
            q = request.query_params
            if request.method == "GET":
                echo = crypto.verify_url(
                    q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"]
                )
                return Response(echo + self.echo_suffix)
            body = await request.body()
            plain = crypto.decrypt_callback(q["msg_signature"], q["timestamp"], q["nonce"], body)
            self.plaintexts.append(plain)
            self.bodies.append(body)
            if self.hang:
                self.hang -= 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), 10)
            return Response(status_code=self.statuses.popleft() if self.statuses else 200)

        routes = [
            Route("/callback", callback, methods=["GET", "POST"]),
            Route("/callback/{app}", callback, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes)


@dataclass
class Fake:
    url: str
    state: FakeState
    http: httpx.AsyncClient
    clock: Clock
    receiver: Receiver

    async def token(self, app: str = "default") -> str:
        r = await self.http.get(
            "/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": APPS[app][1]}
        )
        return str(r.json()["access_token"])

    async def send(self, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        token = token or await self.token()
        r = await self.http.post(
            "/cgi-bin/message/send", params={"access_token": token}, content=json.dumps(body)
        )
        assert r.status_code == 200
        result: dict[str, Any] = r.json()
        return result

    async def messages(self, since: int = 0) -> list[dict[str, Any]]:
        r = await self.http.get("/fake/messages", params={"since": since})
        found: list[dict[str, Any]] = r.json()["messages"]
        return found

    async def fault(self, **spec: Any) -> None:
        r = await self.http.post("/fake/faults", json=spec)
        assert r.status_code == 200, r.text


def text(content: str = "hello", touser: str = "alice", **extra: Any) -> dict[str, Any]:
    return {
        "touser": touser,
        "msgtype": "text",
        "agentid": 1000002,
        "text": {"content": content},
        **extra,
    }


def make_config(callback_base: str, clock: Clock, **overrides: Any) -> FakeConfig:
    apps = tuple(
        FakeApp(
            name=name,
            corp_id=CORP,
            agent_id=agent,
            secret=Secret(secret),
            token=Secret(token),
            encoding_aes_key=Secret(key),
            callback_url=f"{callback_base}/callback" + ("" if name == "default" else f"/{name}"),
        )
        for name, (agent, secret, token, key) in APPS.items()
    )
    return FakeConfig(apps=apps, clock=clock, callback_retry_delay=0, **overrides)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def fake_factory(servers: Servers) -> AsyncIterator[Callable[..., Any]]:
    receivers: list[Receiver] = []
    clients: list[httpx.AsyncClient] = []

    async def start(**overrides: Any) -> Fake:
        receiver = Receiver()
        receivers.append(receiver)
        clock = Clock()
        app = create_app(make_config(await servers.start(receiver.app()), clock, **overrides))
        url = await servers.start(app)
        clients.append(http := httpx.AsyncClient(base_url=url, trust_env=False))
        return Fake(url, app.fake, http, clock, receiver)

    try:
        yield start
    finally:
        for receiver in receivers:
            receiver.release.set()
        for client in clients:
            await client.aclose()


@pytest.fixture
async def fake(fake_factory: Callable[..., Any]) -> Fake:
    started: Fake = await fake_factory()
    return started


# ---------------------------------------------------------------- gettoken


async def test_gettoken_hands_out_one_token_per_app_until_it_expires(fake: Fake) -> None:
    r = (
        await fake.http.get(
            "/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": APPS["default"][1]}
        )
    ).json()
    assert r["errcode"] == 0 and r["expires_in"] == 7200 and len(r["access_token"]) >= 32
    assert await fake.token() == r["access_token"]  # same token while valid
    assert await fake.token("hr") != r["access_token"]  # per app, never per corp
    fake.clock.now += 7200
    assert await fake.token() != r["access_token"]
    stats = (await fake.http.get("/fake/stats")).json()
    assert stats["gettoken"] == {"default": 3, "hr": 1}


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"corpid": "wwnobody", "corpsecret": APPS["default"][1]}, 40013),
        ({"corpid": CORP, "corpsecret": "wrong"}, 40001),
        ({"corpsecret": "x"}, 41002),
        ({"corpid": CORP}, 41004),
    ],
)
async def test_gettoken_refuses_bad_credentials(
    fake: Fake, params: dict[str, str], errcode: int
) -> None:
    r = (await fake.http.get("/cgi-bin/gettoken", params=params)).json()
    assert r["errcode"] == errcode and "access_token" not in r
    assert f"e={errcode}" in r["errmsg"]


# ---------------------------------------------------------------- message/send


async def test_send_delivers_and_lists_unknown_users_lower_cased(fake: Fake) -> None:
    r = await fake.send(text(touser="alice|Zed|BOB"))
    assert r["errcode"] == 0 and r["invaliduser"] == "zed" and r["msgid"]
    [record] = await fake.messages()
    assert record["status"] == "delivered" and record["delivered"] == ["alice", "bob"]
    assert record["body"]["text"]["content"] == "hello" and record["msgid"] == r["msgid"]
    assert (await fake.send(text()))["msgid"] != r["msgid"]


async def test_send_partial_recipients(fake_factory: Callable[..., Any]) -> None:
    fake: Fake = await fake_factory(unlicensed=frozenset({"carol"}), tags={7: ("dave",)})
    body = text(touser="carol|ghost", toparty="1|99", totag="7|8")
    r = await fake.send(body)
    assert r["errcode"] == 0
    assert (r["invaliduser"], r["invalidparty"], r["invalidtag"]) == ("ghost", "99", "8")
    assert r["unlicenseduser"] == "carol"
    [record] = await fake.messages()
    assert "carol" not in record["delivered"] and {"alice", "dave"} <= set(record["delivered"])


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (text(content=""), 44004),
        (text(content="   "), 44004),
        (text(content="x" * 2049), 45002),
        ({**text(), "msgtype": "sticker"}, 40008),
        ({k: v for k, v in text().items() if k != "agentid"}, 41011),
        (text(agentid=1000003), 40056),
        (text(agentid="1000002"), 40056),
        (text(touser="nobody|ghost"), 81013),
        ({"msgtype": "text", "agentid": 1000002, "text": {"content": "x"}}, 82001),
        ("{not json", 47001),
    ],
)
async def test_send_refuses_what_wecom_refuses(fake: Fake, body: Any, errcode: int) -> None:
    token = await fake.token()
    content = body if isinstance(body, str) else json.dumps(body)
    r = await fake.http.post(
        "/cgi-bin/message/send", params={"access_token": token}, content=content
    )
    assert r.json()["errcode"] == errcode
    [record] = await fake.messages()
    assert (
        record["status"] == "rejected" and record["errcode"] == errcode and not record["delivered"]
    )


async def test_send_token_errors(fake: Fake) -> None:
    token = await fake.token()
    post = fake.http.post
    assert (await post("/cgi-bin/message/send", json=text())).json()["errcode"] == 41001
    r = await post("/cgi-bin/message/send", params={"access_token": "forged"}, json=text())
    assert r.json()["errcode"] == 40014
    fake.clock.now += 7200
    assert (await fake.send(text(), token))["errcode"] == 42001


async def test_31st_message_in_a_minute_is_silently_dropped(fake: Fake) -> None:
    token = await fake.token()
    answers = [await fake.send(text(f"m{i}"), token) for i in range(31)]
    assert all(a["errcode"] == 0 and a["msgid"] for a in answers)
    records = await fake.messages()
    assert [r["status"] for r in records] == ["delivered"] * 30 + ["dropped"]
    assert records[-1]["dropped"] == ["alice"]
    assert (await fake.send(text(touser="alice|bob"), token))["errcode"] == 0  # bob is free
    last = (await fake.messages())[-1]
    assert last["status"] == "partial" and last["delivered"] == ["bob"]
    hr = await fake.token("hr")  # another app has its own window for alice
    assert (await fake.send(text(agentid=1000003), hr))["errcode"] == 0
    assert (await fake.messages())[-1]["status"] == "delivered"
    fake.clock.now += 60  # the oldest 30 leave the sliding minute
    await fake.send(text("again"), token)
    assert (await fake.messages())[-1]["status"] == "delivered"


async def test_1001st_message_in_an_hour_is_silently_dropped(fake: Fake) -> None:
    token = await fake.token()
    for i in range(1000):
        fake.clock.now += 3.0  # 20 a minute: never the minute limit
        assert (await fake.send(text(f"m{i}"), token))["errcode"] == 0
    fake.clock.now += 3.0
    assert (await fake.send(text("one too many"), token))["errcode"] == 0
    stats = (await fake.http.get("/fake/stats")).json()
    assert (stats["delivered"], stats["dropped"]) == (1000, 1)


async def test_duplicate_check_suppresses_a_redelivered_body(fake: Fake) -> None:
    token = await fake.token()
    first = await fake.send(text("same"), token)
    second = await fake.send(text("same"), token)  # no check asked: a member may get it twice
    checked = text("same", enable_duplicate_check=1, duplicate_check_interval=600)
    third = await fake.send(checked, token)
    assert third["errcode"] == 0 and third["msgid"] == second["msgid"] != first["msgid"]
    records = await fake.messages()
    assert [r["status"] for r in records] == ["delivered", "delivered", "suppressed"]
    assert records[2]["delivered"] == []
    fake.clock.now += 601
    assert (await fake.send(checked, token))["msgid"] != second["msgid"]
    assert (await fake.messages())[-1]["status"] == "delivered"


async def test_interactive_card_gets_a_single_use_response_code(fake: Fake) -> None:
    card = {
        "card_type": "button_interaction",
        "task_id": "task-1",
        "main_title": {"title": "Approve?"},
        "button_list": [{"text": "Yes", "key": "yes"}],
    }
    body = {
        "touser": "alice",
        "msgtype": "template_card",
        "agentid": 1000002,
        "template_card": card,
    }
    token = await fake.token()
    r = await fake.send(body, token)
    assert r["errcode"] == 0 and r["response_code"]
    assert "response_code" not in await fake.send(text(), token)
    update = {
        "userids": ["alice"],
        "agentid": 1000002,
        "response_code": r["response_code"],
        "button": {"replace_name": "Done"},
    }
    path, params = "/cgi-bin/message/update_template_card", {"access_token": token}
    assert (await fake.http.post(path, params=params, json=update)).json()["errcode"] == 0
    assert (await fake.http.post(path, params=params, json=update)).json()["errcode"] == 40035
    assert (await fake.messages())[0]["card_update"]["button"] == {"replace_name": "Done"}
    wrong_agent = {**update, "agentid": 1000003}
    assert (await fake.http.post(path, params=params, json=wrong_agent)).json()["errcode"] == 40056


# ---------------------------------------------------------------- media, recall


async def test_media_upload_and_send_by_media_id(fake: Fake) -> None:
    token = await fake.token()

    async def upload(kind: str, data: bytes) -> dict[str, Any]:
        files = {"media": ("pic.png", data, "application/octet-stream")}
        r = await fake.http.post(
            "/cgi-bin/media/upload", params={"access_token": token, "type": kind}, files=files
        )
        result: dict[str, Any] = r.json()
        return result

    ok = await upload("image", PNG)
    assert ok["errcode"] == 0 and ok["type"] == "image" and isinstance(ok["created_at"], str)
    assert (await upload("image", b"\x89PNG")).get("errcode") == 40006  # not > 5 bytes
    assert (await upload("image", b"GIF89a" + b"\x00" * 10))["errcode"] == 40005
    assert (await upload("sticker", PNG))["errcode"] == 40004
    assert (await upload("file", b"any bytes at all"))["errcode"] == 0
    image = {
        "touser": "alice",
        "msgtype": "image",
        "agentid": 1000002,
        "image": {"media_id": ok["media_id"]},
    }
    assert (await fake.send(image, token))["errcode"] == 0
    image["image"] = {"media_id": "never-uploaded"}
    assert (await fake.send(image, token))["errcode"] == 40007
    voice = {
        "touser": "alice",
        "msgtype": "voice",
        "agentid": 1000002,
        "voice": {"media_id": ok["media_id"]},
    }
    assert (await fake.send(voice, token))["errcode"] == 40007  # an image is not a voice


async def test_recall_within_24_hours_once(fake: Fake) -> None:
    token = await fake.token()

    def recall(msgid: str) -> Any:
        return fake.http.post(
            "/cgi-bin/message/recall", params={"access_token": token}, json={"msgid": msgid}
        )

    msgid = (await fake.send(text(), token))["msgid"]
    assert (await recall(msgid)).json()["errcode"] == 0
    assert (await fake.messages())[0]["recalled"] is True
    assert (await recall(msgid)).json()["errcode"] == 40035
    assert (await recall("no-such-msgid")).json()["errcode"] == 40035
    old = (await fake.send(text("old"), token))["msgid"]
    fake.clock.now += 86_401
    assert (await recall(old)).json()["errcode"] == 42001  # the token expired too
    new_token = await fake.token()
    r = await fake.http.post(
        "/cgi-bin/message/recall", params={"access_token": new_token}, json={"msgid": old}
    )
    assert r.json()["errcode"] == 40035 and "24 hours" in r.json()["errmsg"]


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("errcode", [-1, 45009, 45033, 81013, 40014])
async def test_errcode_fault_answers_count_times_then_recovers(fake: Fake, errcode: int) -> None:
    token = await fake.token()
    await fake.fault(errcode=errcode, count=2, path="message/send")
    assert [(await fake.send(text(), token))["errcode"] for _ in range(3)] == [errcode, errcode, 0]
    assert [r["status"] for r in await fake.messages()] == ["faulted", "faulted", "delivered"]
    assert (await fake.http.get("/fake/stats")).json()["faults_applied"] == 2


async def test_60020_names_the_calling_ip_and_only_hits_its_path(fake: Fake) -> None:
    good = {"corpid": CORP, "corpsecret": APPS["default"][1]}
    await fake.fault(errcode=60020, path="/cgi-bin/gettoken")
    r = (await fake.http.get("/cgi-bin/gettoken", params=good)).json()
    assert r["errcode"] == 60020 and "from ip: 127.0.0.1" in r["errmsg"]
    assert "access_token" not in r
    assert (await fake.http.get("/cgi-bin/gettoken", params=good)).json()["errcode"] == 0  # once
    await fake.fault(errcode=-1, path="message/send")
    assert (await fake.http.get("/cgi-bin/gettoken", params=good)).json()["errcode"] == 0
    assert (await fake.send(text()))["errcode"] == -1


async def test_revoke_tokens_forces_a_refresh(fake: Fake) -> None:
    old = await fake.token()
    await fake.fault(revoke_tokens=True)
    assert (await fake.send(text(), old))["errcode"] == 42001
    new = await fake.token()
    assert new != old and (await fake.send(text(), new))["errcode"] == 0


async def test_delay_fault_answers_late(fake: Fake) -> None:
    token = await fake.token()
    await fake.fault(delay=0.5, count=2, path="message/send")
    with pytest.raises(httpx.ReadTimeout):
        await fake.http.post(
            "/cgi-bin/message/send", params={"access_token": token}, json=text(), timeout=0.1
        )
    r = await fake.http.post(
        "/cgi-bin/message/send", params={"access_token": token}, json=text(), timeout=5
    )
    assert r.json()["errcode"] == 0


async def test_timeout_fault_hangs_until_the_client_gives_up(fake: Fake) -> None:
    token = await fake.token()
    await fake.fault(timeout=True, seconds=10, path="message/send")
    with pytest.raises(httpx.ReadTimeout):
        await fake.http.post(
            "/cgi-bin/message/send", params={"access_token": token}, json=text("lost"), timeout=0.3
        )
    assert (await fake.send(text("next"), token))["errcode"] == 0
    assert [r["status"] for r in await fake.messages()] == ["faulted", "delivered"]
    # deliver=True: WeCom sent the message but its answer never came back.
    await fake.fault(timeout=True, deliver=True, seconds=10, path="message/send")
    with pytest.raises(httpx.ReadTimeout):
        await fake.http.post(
            "/cgi-bin/message/send", params={"access_token": token}, json=text("sent"), timeout=0.3
        )
    last = (await fake.messages())[-1]
    assert last["status"] == "delivered" and last["body"]["text"]["content"] == "sent"


async def test_reset_fault_resets_the_connection(fake: Fake) -> None:
    token = await fake.token()
    await fake.fault(reset=True, count=2, path="message/send")
    with pytest.raises(httpx.TransportError):
        await fake.http.post("/cgi-bin/message/send", params={"access_token": token}, json=text())
    # A raw socket shows it is a reset (RST), not an orderly close.
    host, port = fake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(text()).encode()
    writer.write(
        f"POST /cgi-bin/message/send?access_token={token} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1024), 5)
    writer.close()
    assert (await fake.send(text(), token))["errcode"] == 0
    assert [r["status"] for r in await fake.messages()] == ["faulted", "faulted", "delivered"]


async def test_faults_are_listed_cleared_and_checked(fake: Fake) -> None:
    await fake.fault(errcode=-1, count=5)
    listed = (await fake.http.get("/fake/faults")).json()["faults"]
    assert listed[0]["remaining"] == 5 and listed[0]["path"] is None
    assert (await fake.http.delete("/fake/faults")).json()["cleared"] == 1
    assert (await fake.send(text()))["errcode"] == 0
    for bad in (
        {"errcode": -1, "reset": True},
        {"count": 3},
        {"delay": 99},
        {"errcode": -1, "bogus": 1},
    ):
        assert (await fake.http.post("/fake/faults", json=bad)).status_code == 400


# ---------------------------------------------------------------- callbacks


async def push(fake: Fake, **spec: Any) -> dict[str, Any]:
    r = await fake.http.post("/fake/callbacks", json=spec, timeout=30)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_text_callback_is_signed_encrypted_and_decryptable(fake: Fake) -> None:
    content = "你好吗? ]]> <b>&amp;"
    record = await push(fake, app="default", **{"from": "bob"}, type="text", content=content)
    assert record["ok"] is True and [a["status"] for a in record["attempts"]] == [200]
    [plain] = fake.receiver.plaintexts
    xml = ElementTree.fromstring(plain)
    assert xml.findtext("Content") == content and xml.findtext("MsgType") == "text"
    assert xml.findtext("FromUserName") == "bob" and xml.findtext("ToUserName") == CORP
    assert xml.findtext("MsgId") == str(record["msg_id"]) and xml.findtext("AgentID") == "1000002"
    hr = await push(fake, app="hr", type="text", content="to hr")
    assert hr["ok"] and b"<AgentID>1000003</AgentID>" in fake.receiver.plaintexts[-1]


async def test_callback_retries_on_500_up_to_three_times(fake: Fake) -> None:
    fake.receiver.statuses.extend([500, 503])
    record = await push(fake, content="retry me")
    assert [a["status"] for a in record["attempts"]] == [500, 503, 200] and record["ok"]
    fake.receiver.statuses.extend([500] * 10)
    record = await push(fake, content="never")
    assert [a["status"] for a in record["attempts"]] == [500] * 4 and record["ok"] is False
    assert len(set(fake.receiver.plaintexts[3:])) == 1  # every retry: the same plaintext
    assert len(set(fake.receiver.bodies[3:])) == 4  # ...encrypted afresh each time


async def test_callback_retries_after_a_timeout(fake: Fake) -> None:
    fake.receiver.hang = 1
    record = await push(fake, content="slow", timeout=0.3)
    first, second = record["attempts"]
    assert first["status"] is None and "no answer" in first["error"] and second["status"] == 200
    assert fake.receiver.plaintexts[0] == fake.receiver.plaintexts[1]


async def test_duplicate_delivers_the_same_callback_n_times(fake: Fake) -> None:
    record = await push(fake, content="thrice", duplicate=3)
    assert [a["delivery"] for a in record["attempts"]] == [1, 2, 3] and record["ok"]
    assert len(set(fake.receiver.plaintexts)) == 1 and len(fake.receiver.plaintexts) == 3


async def test_event_callbacks(fake: Fake) -> None:
    await push(fake, type="event", event="enter_agent")
    await push(fake, type="event", event="click", event_key="menu_help")
    await push(fake, type="event", event="LOCATION", latitude=39.9, longitude=116.4, precision=30)
    enter, click, location = fake.receiver.plaintexts
    assert b"<Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey>" in enter
    assert b"<MsgId>" not in enter
    assert b"<EventKey><![CDATA[menu_help]]></EventKey>" in click
    assert b"<Latitude>39.9</Latitude><Longitude>116.4</Longitude>" in location


async def test_template_card_event_carries_a_usable_response_code(fake: Fake) -> None:
    await push(
        fake,
        type="event",
        event="template_card_event",
        event_key="yes",
        task_id="t1",
        card_type="button_interaction",
    )
    [plain] = fake.receiver.plaintexts
    code = plain.split(b"<ResponseCode><![CDATA[")[1].split(b"]]>")[0].decode()
    update = {
        "userids": ["alice"],
        "agentid": 1000002,
        "response_code": code,
        "button": {"replace_name": "Done"},
    }
    params = {"access_token": await fake.token()}
    r = await fake.http.post("/cgi-bin/message/update_template_card", params=params, json=update)
    assert r.json()["errcode"] == 0


async def test_callback_requests_are_checked(fake: Fake) -> None:
    post = fake.http.post
    assert (await post("/fake/callbacks", json={"type": "text"})).status_code == 400
    assert (await post("/fake/callbacks", json={"type": "event"})).status_code == 400
    assert (await post("/fake/callbacks", json={"app": "nope", "content": "x"})).status_code == 404
    assert (await post("/fake/callbacks", json={"content": "x", "color": "red"})).status_code == 400
    assert fake.receiver.plaintexts == []


async def test_url_verification_handshake(fake: Fake) -> None:
    assert (await fake.http.post("/fake/verify", json={"app": "default"})).json()["ok"] is True
    assert (await fake.http.post("/fake/verify", json={"app": "hr"})).json()["ok"] is True
    fake.receiver.echo_suffix = b"\n"
    answer = (await fake.http.post("/fake/verify", json={"app": "default"})).json()
    assert answer["ok"] is False and "not the decrypted echostr" in answer["detail"]


async def test_callback_to_an_unreachable_app(fake: Fake, servers: Servers) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/callback"
    apps = tuple(msgspec.structs.replace(a, callback_url=closed) for a in fake.state.config.apps)
    app = create_app(FakeConfig(apps=apps, callback_retry_delay=0))
    async with httpx.AsyncClient(base_url=await servers.start(app), trust_env=False) as http:
        verify = (await http.post("/fake/verify", json={"app": "default"})).json()
        assert verify["ok"] is False and "cannot reach" in verify["detail"]
        record = (await http.post("/fake/callbacks", json={"content": "x", "retries": 1})).json()
        assert record["ok"] is False and len(record["attempts"]) == 2
        assert all(a["status"] is None and a["error"] for a in record["attempts"])


# ---------------------------------------------------------------- inspection, page, config


async def test_inspection_since_and_reset(fake: Fake) -> None:
    await fake.send(text("one"))
    last = (await fake.http.get("/fake/messages")).json()["last"]
    await fake.send(text("two"))
    [newer] = await fake.messages(since=last)
    assert newer["body"]["text"]["content"] == "two"
    await push(fake, content="hi")
    assert len((await fake.http.get("/fake/callbacks")).json()["callbacks"]) == 1
    assert (await fake.http.delete("/fake/reset")).json()["ok"]
    assert await fake.messages() == [] and (await fake.http.get("/fake/stats")).json()["sends"] == 0


async def test_chat_page_is_served_with_stable_ids(fake: Fake) -> None:
    page = (await fake.http.get("/")).text
    for element_id in ("member", "app", "text", "send", "log", "enter-agent", "click", "location"):
        assert f'id="{element_id}"' in page
    script = await fake.http.get("/static/chat.js")
    assert script.status_code == 200 and "/fake/callbacks" in script.text
    assert (await fake.http.get("/static/chat.css")).status_code == 200
    apps = (await fake.http.get("/fake/apps")).json()
    assert [a["name"] for a in apps["apps"]] == ["default", "hr"] and "alice" in apps["members"]
    assert "secret" not in json.dumps(apps).lower()
    assert (await fake.http.get("/readyz")).status_code == 200


def test_config_from_env_and_masked_secrets() -> None:
    env = {
        "WECOM_CORP_ID": CORP,
        "WECOM_AGENT_ID": "1000002",
        "WECOM_SECRET": "the-secret-value",
        "WECOM_TOKEN": "TokenDefault01",
        "WECOM_ENCODING_AES_KEY": APPS["default"][3],
        "FAKE_WECOM_CALLBACK_URL": "http://127.0.0.1:18080/callback",
        "FAKE_WECOM_MEMBERS": "zoe, yan",
    }
    config = config_from_env(env)
    [app] = config.apps
    assert app.callback_url == "http://127.0.0.1:18080/callback" and config.members == (
        "zoe",
        "yan",
    )
    assert "the-secret-value" not in repr(config)
    with pytest.raises(ConfigError) as info:
        config_from_env({k: v for k, v in env.items() if k != "WECOM_SECRET"})
    assert info.value.variable == "WECOM_SECRET"
    with pytest.raises(ConfigError, match="FAKE_WECOM_CALLBACK_URL"):
        config_from_env({**env, "FAKE_WECOM_CALLBACK_URL": "ftp://x"})


def test_config_from_an_apps_file_routes_each_app_to_its_ingress_path(tmp_path: Any) -> None:
    apps_file = tmp_path / "apps.toml"
    rows = []
    for name, (agent, secret, token, key) in APPS.items():
        rows.append(
            f'[apps.{name}]\ncorp_id = "{CORP}"\nagent_id = {agent}\nsecret = "{secret}"\n'
            f'token = "{token}"\nencoding_aes_key = "{key}"\n'
        )
    apps_file.write_text("\n".join(rows))
    env = {"WECOM_APPS_FILE": str(apps_file), "FAKE_WECOM_CALLBACK_BASE": "http://ingress:8080/"}
    urls = {app.name: app.callback_url for app in config_from_env(env).apps}
    assert urls == {
        "default": "http://ingress:8080/callback",
        "hr": "http://ingress:8080/callback/hr",
    }


async def test_old_records_are_forgotten_past_max_records(fake_factory: Callable[..., Any]) -> None:
    fake: Fake = await fake_factory(max_records=10)
    token = await fake.token()
    first = (await fake.send(text("first"), token))["msgid"]
    for i in range(10):
        await fake.send(text(f"m{i}", touser="bob"), token)
    records = await fake.messages()
    assert len(records) == 10 and records[-1]["body"]["text"]["content"] == "m9"
    r = await fake.http.post(
        "/cgi-bin/message/recall", params={"access_token": token}, json={"msgid": first}
    )
    assert r.json()["errcode"] == 40035
