"""The operator console over HTTP, in-process against a real Redis: login, CSRF, every page,
bad input (4xx, never 5xx), and the CLI's refusal to serve others without a key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from services.console.app import create_app
from services.console.auth import COOKIE, SESSION_SECONDS, Access
from shared.bus import names, sendstate
from shared.bus.deadletter import DeadLetters
from shared.bus.tally import Tally
from shared.config import Settings, load_settings
from shared.wecom import circuit
from tests import helpers

KEY = "console-key-0123456789abcdef"
TOKEN_VALUE = "THE-ACCESS-TOKEN-must-never-show-0123456789"


def settings(redis_url: str, **env: str) -> Settings:
    return helpers.settings(redis_url, CONSOLE_API_KEY=KEY, **env)


@pytest.fixture
async def anon(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """A browser that has not logged in yet (the console has a key)."""
    app = create_app(settings(redis_url), redis, Access(KEY))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.example") as c:
        yield c


@pytest.fixture
async def client(anon: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same browser, logged in."""
    answer = await anon.post("/login", data={"key": KEY, "next": "/"})
    assert answer.status_code == 303
    return anon


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def dead_letter(redis: Redis, *, group: str = "sender", reason: str = "") -> str:
    """A dead letter as the consumer runtime writes it, for an entry pending in ``group``."""
    stream = names.outbox() if group == "sender" else names.events()
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    data = json.dumps({"id": "req-1", "app": "default", "request": {"touser": "nobody"}})
    entry = text(await redis.xadd(stream, {"data": data}))
    await redis.xreadgroup(group, "c1", {stream: ">"})
    fields = {
        "stream": stream,
        "group": group,
        "id": entry,
        "attempts": 1,
        "error": reason or "errcode 81013: Every UserID is invalid; check the recipients.",
        "data": data,
        "time": time.time(),
        "consumer": "c1",
    }
    await redis.xack(stream, group, entry)
    return text(await redis.xadd(names.deadletter(), fields))  # type: ignore[arg-type]


# ------------------------------------------------------------------ access


async def test_without_a_session_pages_send_to_the_login_and_posts_are_refused(
    anon: httpx.AsyncClient,
) -> None:
    for path in ("/", "/deadletters", "/sends", "/token", "/deadletters/1-0"):
        answer = await anon.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert (await anon.post("/deadletters/act", data={"action": "drop"})).status_code == 401
    login = await anon.get("/login")
    assert login.status_code == 200 and 'type="password"' in login.text


async def test_login_sets_a_signed_httponly_strict_cookie_never_the_key(
    anon: httpx.AsyncClient,
) -> None:
    wrong = await anon.post("/login", data={"key": KEY[:-1] + "x"})
    assert wrong.status_code == 403 and "Wrong key" in wrong.text
    assert COOKIE not in anon.cookies
    right = await anon.post("/login", data={"key": KEY, "next": "/sends"})
    assert right.status_code == 303 and right.headers["location"] == "/sends"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and KEY not in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS the cookie is Secure too
    assert (await anon.get("/sends")).status_code == 200


async def test_over_https_the_cookie_is_secure(redis_url: str, redis: Redis) -> None:
    app = create_app(settings(redis_url), redis, Access(KEY))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://console.example") as c:
        answer = await c.post("/login", data={"key": KEY})
        assert answer.status_code == 303 and "Secure" in answer.headers["set-cookie"]


async def test_login_goes_back_only_to_this_site(anon: httpx.AsyncClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = await anon.post("/login", data={"key": KEY, "next": target})
        assert answer.headers["location"] == "/"


async def test_a_forged_or_expired_session_is_not_a_session(
    anon: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    value = client.cookies[COOKIE]
    session_id, issued, signature = value.split(".")
    client.cookies.set(COOKIE, f"{session_id}x.{issued}.{signature}", domain="console.example")
    assert (await client.get("/")).status_code == 303
    access = Access(KEY)
    session = access.issue()
    stale = access.cookie_value(session, now=time.time() - SESSION_SECONDS - 5)
    client.cookies.set(COOKIE, stale, domain="console.example")
    assert (await client.get("/")).status_code == 303
    assert repr(access) == "Access(required=True)"


async def test_replay_and_drop_need_the_sessions_csrf_token(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    letter = await dead_letter(redis)
    page = await client.get("/deadletters")
    token = csrf(page)
    form = {"action": "drop", "ids": letter}
    assert (await client.post("/deadletters/act", data=form)).status_code == 403
    bad = {**form, "csrf": "0" * 64}
    assert (await client.post("/deadletters/act", data=bad)).status_code == 403
    assert await DeadLetters(redis).count() == 1
    done = await client.post("/deadletters/act", data={**form, "csrf": token})
    assert done.status_code == 303 and "dropped+1" in done.headers["location"]
    assert await DeadLetters(redis).count() == 0


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    token = csrf(await client.get("/"))
    answer = await client.post("/logout", data={"csrf": token})
    assert answer.status_code == 303
    assert (await client.get("/")).status_code == 303


async def test_without_a_key_localhost_gets_a_session_and_other_hosts_are_refused(
    redis_url: str, redis: Redis
) -> None:
    app = create_app(helpers.settings(redis_url), redis, Access(None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8083") as c:
        letter = await dead_letter(redis)
        page = await c.get("/deadletters")
        assert page.status_code == 200 and COOKIE in c.cookies
        assert 'action="/logout"' not in page.text  # no login, so nothing to log out of
        form = {"action": "drop", "ids": letter}
        assert (await c.post("/deadletters/act", data=form)).status_code == 403
        ok = await c.post("/deadletters/act", data={**form, "csrf": csrf(page)})
        assert ok.status_code == 303
        assert (await c.get("/login")).status_code == 303  # nothing to log in to
    async with httpx.AsyncClient(transport=transport, base_url="http://rebound.example") as c:
        assert (await c.get("/")).status_code == 403


def test_the_key_may_come_from_a_file(tmp_path: pytest.TempPathFactory, redis_url: str) -> None:
    path = tmp_path / "key"  # type: ignore[operator]
    path.write_text(KEY + "\n")
    loaded = load_settings({"REDIS_URL": redis_url, "CONSOLE_API_KEY_FILE": str(path)})
    assert loaded.console_api_key is not None and loaded.console_api_key.get() == KEY
    assert KEY not in repr(loaded)


def test_without_a_key_the_command_refuses_to_listen_beyond_localhost(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "console", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "CONSOLE_API_KEY" in line and "127.0.0.1" in line


# ------------------------------------------------------------------ pages


async def test_overview_charts_each_app_and_shows_every_group(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    calls, sends = Tally("callbacks"), Tally("sends")
    for _ in range(7):
        calls.ack("default", "stored", 0.003)
    sends.add("default", "0", 5)
    sends.add("default", "81013", 2)
    await calls.flush(redis, "wecom")
    await sends.flush(redis, "wecom")
    await redis.xgroup_create(names.events(), "helpdesk", id="$", mkstream=True)
    for i in range(3):
        await redis.xadd(names.events(), {"data": f"{i}"})
    await redis.xreadgroup("helpdesk", "worker-1", {names.events(): ">"}, count=1)
    page = await client.get("/")
    assert page.status_code == 200
    assert 'n-callbacks">7<' in page.text and 'n-sends">7<' in page.text
    assert "<svg" in page.text and 'class="bad"' in page.text  # the two refused sends
    assert "5.0 ms" in page.text  # the p99 bucket of 3 ms acks
    row = re.search(r'<tr data-group="helpdesk".*?</tr>', page.text)
    assert row, page.text
    assert 'class="lag" data-label="Lag">2<' in row.group(0)
    assert 'class="pending" data-label="Pending">1<' in row.group(0)
    assert "worker-1" in row.group(0) and "-0</code>" in row.group(0)


async def test_deadletters_list_detail_and_filtered_replay(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    first = await dead_letter(redis)
    other = await dead_letter(redis, group="responder", reason="handler raised ValueError: boom")
    page = await client.get("/deadletters")
    assert first in page.text and other in page.text and "81013" in page.text
    filtered = await client.get("/deadletters", params={"reason": "boom"})
    assert other in filtered.text and first not in filtered.text
    detail = await client.get(f"/deadletters/{first}")
    assert detail.status_code == 200
    assert "Every UserID is invalid" in detail.text
    assert "&quot;touser&quot;: &quot;nobody" in detail.text  # the payload, decoded
    form = {"action": "replay_filtered", "f_reason": "boom", "csrf": csrf(page)}
    done = await client.post("/deadletters/act", data=form)
    assert done.status_code == 303 and "replayed+1" in done.headers["location"]
    left = await DeadLetters(redis).list()
    assert [letter.id for letter in left] == [first]
    pending = await redis.xpending(names.events(), "responder")
    assert pending["pending"] == 1  # given back to the group that failed it


async def test_bad_dead_letter_input_is_a_4xx(client: httpx.AsyncClient, redis: Redis) -> None:
    assert (await client.get("/deadletters/not-an-id")).status_code == 400
    assert (await client.get("/deadletters/1-0")).status_code == 404
    token = csrf(await client.get("/deadletters"))
    for form in (
        {"action": "explode", "ids": "1-0"},
        {"action": "replay"},
        {"action": "replay", "ids": "nope"},
        {"action": "drop", "ids": "1-0; FLUSHALL"},
    ):
        answer = await client.post("/deadletters/act", data={**form, "csrf": token})
        assert answer.status_code == 400, form
    assert (await client.get("/nowhere")).status_code == 404
    assert (await client.put("/deadletters")).status_code == 405


async def test_a_dead_letters_text_is_escaped(client: httpx.AsyncClient, redis: Redis) -> None:
    letter = await dead_letter(redis, reason="<script>alert(1)</script>")
    for path in ("/deadletters", f"/deadletters/{letter}"):
        text = (await client.get(path)).text
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text


async def test_sends_show_the_delayed_queue_circuits_errcodes_and_a_lookup(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    request = {"msgtype": "text", "touser": "alice", "text": {"content": "hi"}}
    entry = {"id": "req-wait", "app": "default", "trace_id": "t", "created_at": 1}
    entry["request"] = request
    until = time.time() + 1800
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(names.delayed_data("wecom"), "req-wait", json.dumps(entry))
        pipe.zadd(names.delayed("wecom"), {"req-wait": until})
        sendstate.delayed(pipe, "wecom", "req-wait", until, "a member's rate limit")
        sendstate.dead(pipe, "wecom", "req-dead", 81013, "check the recipients")
        await pipe.execute()
    await circuit.trip(redis, "wecom", "default", reason="config", errcode=60020,
                       advice="add the IP", probe=False, waits=[60], now=time.time())  # fmt: skip
    sends = Tally("sends")
    sends.add("default", "60020", 3)
    await sends.flush(redis, "wecom")
    page = await client.get("/sends")
    assert page.status_code == 200
    assert "req-wait" in page.text and "alice" in page.text and "rate limit" in page.text
    assert 'class="circuit open"' in page.text and "60020" in page.text
    assert "企业可信IP" in page.text  # the advice for errcode 60020 in the errcode table
    dead = await client.get("/sends", params={"id": "req-dead"})
    assert "dead" in dead.text and "check the recipients" in dead.text
    waiting = await client.get("/sends", params={"id": "req-wait"})
    assert "delayed" in waiting.text
    unknown = await client.get("/sends", params={"id": "never-sent"})
    assert "No request with this id" in unknown.text
    assert (await client.get("/sends", params={"id": "a b<"})).status_code == 400


async def test_token_page_shows_the_time_left_never_the_token(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    assert "no" in (await client.get("/token")).text
    key = names.token("wecom", helpers.CORP_ID, helpers.AGENT_ID)
    await redis.set(key, TOKEN_VALUE, ex=5400)
    page = await client.get("/token")
    assert page.status_code == 200
    assert TOKEN_VALUE not in page.text and TOKEN_VALUE[:12] not in page.text
    assert re.search(r'class="cached">yes<.*class="left">1h (29|30)m<', page.text)
    for path in ("/", "/sends", "/deadletters"):
        assert TOKEN_VALUE not in (await client.get(path)).text


async def test_labels_in_chinese_and_security_headers(client: httpx.AsyncClient) -> None:
    page = await client.get("/", params={"lang": "zh"})
    assert "概览" in page.text and "消费组" in page.text and 'lang="zh-CN"' in page.text
    assert "死信" in (await client.get("/deadletters")).text  # remembered in a cookie
    assert "Dead letters" in (await client.get("/deadletters", params={"lang": "en"})).text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_redis_away_is_a_503_page(redis_url: str) -> None:
    away = Redis.from_url(redis_url.rsplit(":", 1)[0] + ":1")
    app = create_app(settings(redis_url), away, Access(None))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            assert (await c.get("/deadletters")).status_code == 503
    finally:
        await away.aclose()
