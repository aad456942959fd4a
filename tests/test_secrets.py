"""Secrets stay secret and the HTTP edges hold (docs/reliability.md §6); every part a real process.

A full conversation plus a set of failures (bad signatures, wrong API keys, WeCom errors 40014
and 60020, a revoked token, a Redis outage) runs with known secret values at LOG_LEVEL=debug;
then no secret, and no access token the fake WeCom issued, may appear in any log line, any
/metrics page, any error body or any dead letter. Then oversized requests (a 1 MB header,
10,000 headers, a 1 MB request line, a 2 MB API body) must get a 4xx or a closed connection,
never a 5xx, and leave the services healthy.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from redis import Redis

from devkit.embedded_redis import EmbeddedRedis
from shared.bus import names
from shared.protocol.crypto import CallbackCrypto
from tests.system import System, running_system
from tests.test_chaos import dead_letters, ready

pytestmark = pytest.mark.slow

SECRET_VARS = ("SENDER_API_KEY", "WECOM_SECRET", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY")
CONTENT = "plaintext-canary-7f3a"  # a member's words: not a secret, but never logged either


def crypto_of(system: System) -> CallbackCrypto:
    env = system.env
    return CallbackCrypto(env["WECOM_TOKEN"], env["WECOM_ENCODING_AES_KEY"], env["WECOM_CORP_ID"])


def callback(system: System, content: str, *, msg_id: int) -> tuple[dict[str, str], bytes]:
    """A correctly signed and encrypted callback, built here rather than by the fake."""
    env = system.env
    plain = (
        f"<xml><ToUserName><![CDATA[{env['WECOM_CORP_ID']}]]></ToUserName>"
        f"<FromUserName><![CDATA[alice]]></FromUserName><CreateTime>{int(time.time())}"
        f"</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]>"
        f"</Content><MsgId>{msg_id}</MsgId><AgentID>{env['WECOM_AGENT_ID']}</AgentID></xml>"
    ).encode()
    return crypto_of(system).build_callback(
        plain, timestamp=str(int(time.time())), nonce="42", agent_id=int(env["WECOM_AGENT_ID"])
    )


def access_token(redis_url: str) -> str:
    """The access token the sender cached (whatever the exact key: wecom:token:…)."""
    client = Redis.from_url(redis_url)
    try:
        [value] = [client.get(key) for key in client.scan_iter(match="wecom:token:*")]
    finally:
        client.close()
    assert isinstance(value, bytes), "the sender caches its access token in Redis"
    return value.decode()


def texts(system: System) -> list[str]:
    return [m["body"].get("text", {}).get("content", "") for m in system.sends()]


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(appendfsync="always") as server:
        yield server


def test_no_secret_in_logs_metrics_error_bodies_or_dead_letters(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    bodies: list[str] = []  # every error answer our services gave
    tokens: set[str] = set()

    def keep(response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text
        bodies.append(response.text)

    with running_system(
        own_redis.url, tmp_path, LOG_LEVEL="debug", SENDER_CIRCUIT_PROBE="2"
    ) as system:
        api = system.url("sender", "/v1/messages")
        good = {"Authorization": f"Bearer {system.api_key}"}
        # The conversation.
        system.push(**{"from": "alice", "content": f"{CONTENT} 吗?", "duplicate": 2})
        system.push(**{"from": "bob", "type": "event", "event": "click", "event_key": "k"})
        api_message = {"touser": "carol", "msgtype": "text", "text": {"content": f"{CONTENT} api"}}
        sent = httpx.post(api, headers=good, json=api_message)
        assert sent.status_code == 202
        system.wait_for(lambda: len(texts(system)) == 2, what="both messages")
        keep(httpx.get(f"{api}/{sent.json()['id']}", headers=good), 200)
        tokens.add(access_token(own_redis.url))

        # Callbacks that fail verification.
        params, body = callback(system, CONTENT, msg_id=1)
        ingress = system.url("ingress", "/callback")
        keep(httpx.post(ingress, params={**params, "msg_signature": "0" * 40}, content=body), 403)
        keep(httpx.post(ingress, params={**params, "nonce": "43"}, content=body), 403)
        keep(httpx.post(ingress, params=params, content=body[: len(body) // 2]), 400)
        verify = {"msg_signature": "0" * 40, "timestamp": params["timestamp"], "nonce": "1"}
        keep(httpx.get(ingress, params={**verify, "echostr": "QUJD"}), 403)
        keep(httpx.post(ingress + "/nope", params=params, content=body), 404)

        # The send API refuses missing and wrong keys.
        message = {"touser": "carol", "msgtype": "text", "text": {"content": "x"}}
        keep(httpx.post(api, json=message), 401)
        keep(httpx.post(api, json=message, headers={"Authorization": "Bearer wrong-key"}), 403)
        keep(
            httpx.post(api, json=message, headers={"Authorization": f"Basic {system.api_key}"}), 401
        )
        near = {"Authorization": f"Bearer {system.api_key}x"}
        keep(httpx.post(api, json=message, headers=near), 403)
        keep(
            httpx.post(
                api, json=message, headers={"Authorization": f"Bearer {system.api_key[:-1]}"}
            ),
            403,
        )
        keep(httpx.get(f"{api}/anything"), 401)
        keep(httpx.post(api, headers=good, json={"touser": "carol", "msgtype": "text"}), 422)
        keep(httpx.post(api, headers=good, content=b"{not json"), 422)

        # WeCom errors: a stale token (40014), an untrusted IP (60020), a revoked token.
        system.fake("POST", "/fake/faults", json={"errcode": 40014, "path": "message/send"})
        system.push(**{"from": "alice", "content": "after 40014"})
        system.wait_for(lambda: "after 40014" in texts(system), what="the 40014 retry")
        system.fake("POST", "/fake/faults", json={"revoke_tokens": True})
        system.push(**{"from": "alice", "content": "after revocation"})
        system.wait_for(lambda: "after revocation" in texts(system), what="a fresh token")
        tokens.add(access_token(own_redis.url))
        # 60020 pauses the app (its advice names the IP) until a probe gets through.
        system.fake("POST", "/fake/faults", json={"errcode": 60020, "path": "message/send"})
        system.push(**{"from": "alice", "content": "meets 60020"})
        system.wait_for(
            lambda: any(
                m["status"] == "delivered"
                and m["body"].get("text", {}).get("content") == "meets 60020"
                for m in system.sends()
            ),
            what="the send paused by 60020",
        )
        system.push(**{"from": "nobody-here", "content": "to no member"})  # WeCom: 81013
        client = Redis.from_url(own_redis.url)
        system.wait_for(lambda: client.xlen(names.deadletter()) == 1, what="the 81013 dead letter")

        # Redis goes away for a moment: every service logs about it.
        own_redis.kill()
        keep(httpx.post(api, headers=good, json=message), 503)
        system.push(**{"from": "alice", "content": "during outage", "retries": 0})
        system.wait_for(
            lambda: all(
                "redis unreachable" in (tmp_path / f"{name}.log").read_text()
                for name in ("responder", "sender")
            ),
            what="the consumers to log the outage",
        )
        own_redis.start()
        for service in ("ingress", "responder", "sender"):
            system.wait_for(partial(ready, system, service), timeout=30, what=f"{service} back")
        client.close()
        letters = dead_letters(own_redis.url)
        metrics = [
            httpx.get(system.url(s, "/metrics")).text for s in ("ingress", "responder", "sender")
        ]
        logs = system.logs()
        gettoken = system.fake("GET", "/fake/stats")["gettoken"]["default"]
        secrets = {name: system.env[name] for name in SECRET_VARS}

    assert len(tokens) == 2, "the revocation made the fake issue a second token"
    key_bytes = base64.b64decode(secrets["WECOM_ENCODING_AES_KEY"] + "=")
    needles = {
        **secrets,
        "AES key (hex)": key_bytes.hex(),
        **{f"token {i}": t for i, t in enumerate(tokens)},
    }
    assert "errcode 81013" in letters[0]["error"]
    # The failures did happen (so the logs were given every chance to leak).
    assert "60020" in logs and "redis unreachable" in logs and "bad_signature" in logs
    assert gettoken == 3  # at the start, after 40014, after the revocation
    for name, value in needles.items():
        assert value not in logs, f"{name} in a log line"
        for page in metrics:
            assert value not in page, f"{name} in /metrics"
        for answer in bodies:
            assert value not in answer, f"{name} in an error body"
        for letter in letters:
            assert value not in str(letter), f"{name} in a dead letter"
    assert CONTENT not in logs, "a member's message text in a log line"


# ---------------------------------------------------------------- size and header limits


def raw_status(port: int, request: bytes) -> int | None:
    """Send raw bytes; the status of the answer, or None when the server just hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # The server may stop reading early: it may still have answered.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def edge(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("edge")
    with running_system(redis_url, log_dir, services=("ingress", "sender"), BUS_PREFIX="edge") as s:
        yield s


HUGE = {
    "a 1 MB header": lambda head: head + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
    "10,000 headers": lambda head: (
        head + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
    ),
    "a 1 MB request line": lambda head: (
        head.replace(b"?", b"?pad=" + b"p" * 1_000_000 + b"&", 1) + b"\r\n"
    ),
}


@pytest.mark.parametrize("service", ["ingress", "sender"])
@pytest.mark.parametrize("case", list(HUGE))
def test_oversized_requests_get_4xx_or_a_closed_connection(
    edge: System, service: str, case: str
) -> None:
    path = (
        b"/callback?msg_signature=a&timestamp=1&nonce=1"
        if service == "ingress"
        else b"/v1/messages?x=1"
    )
    head = b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    status = raw_status(edge.ports[service], HUGE[case](head))
    assert status is None or 400 <= status < 500, f"{case}: {status}"
    assert httpx.get(edge.url(service, "/healthz")).status_code == 200
    assert httpx.get(edge.url(service, "/readyz")).status_code == 200
    edge.stack.check_alive()


def test_bodies_over_the_limits_get_413_and_the_edge_still_works(edge: System) -> None:
    params, body = callback(edge, "still fine", msg_id=991)
    ingress = edge.url("ingress", "/callback")
    huge = b"<xml><Encrypt>" + b"A" * 300_000 + b"</Encrypt></xml>"  # INGRESS_MAX_BODY 262144
    assert httpx.post(ingress, params=params, content=huge).status_code == 413
    assert httpx.post(ingress, params=params, content=iter([huge] * 4)).status_code == 413
    api = edge.url("sender", "/v1/messages")
    good = {"Authorization": f"Bearer {edge.api_key}"}
    big = b'{"touser":"alice","msgtype":"text","text":{"content":"' + b"x" * 2_000_000 + b'"}}'
    assert httpx.post(api, headers=good, content=big).status_code == 413
    assert httpx.post(api, headers=good, content=iter([big])).status_code == 413
    assert httpx.post(api, content=big).status_code == 401  # no key: refused before reading
    # The edge still does its job.
    assert httpx.post(ingress, params=params, content=body).status_code == 200
    client = Redis.from_url(edge.env["REDIS_URL"])
    try:
        assert client.xlen(names.events("edge")) == 1
    finally:
        client.close()


def test_a_valid_query_is_not_enough(edge: System) -> None:
    """The signature covers Encrypt: a replayed query with another body is refused."""
    params, _ = callback(edge, "first", msg_id=992)
    _, other = callback(edge, "second", msg_id=993)
    response = httpx.post(edge.url("ingress", "/callback") + "?" + urlencode(params), content=other)
    assert response.status_code == 403
