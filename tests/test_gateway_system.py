"""The gateway end to end, every part a real process: a team's behaviour (examples.greeter, its
own group) reads the member's name through ``ctx.wecom`` and hashes the image they sent; the
sender's gateway serves user/get and media/get over HTTP and refuses what is not allowed."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.embedded_redis import free_port
from tests.system import System, fresh_database, running_system
from tests.test_e2e import texts_to

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    log_dir: Path = tmp_path_factory.mktemp("gateway")
    services = ("fake-wecom", "ingress", "sender")
    fresh_database(redis_url)
    with running_system(redis_url, log_dir, services, BUS_HANDLER_TIMEOUT="15") as running:
        running.env["SENDER_URL"] = running.url("sender")
        port = free_port()
        running.stack.spawn(
            "responder",
            *("--group", "greeter", "--handlers", "examples.greeter.router:router"),
            *("--host", "127.0.0.1", "--port", str(port)),
            label="greeter",
        )
        running.stack.wait_ready({"greeter": f"http://127.0.0.1:{port}/readyz"}, timeout=60)
        yield running


def stats(system: System) -> dict[str, Any]:
    answer: dict[str, Any] = system.fake("GET", "/fake/stats")
    return answer


def gateway(system: System, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {system.api_key}"}
    return httpx.get(system.url("sender", f"/v1/wecom/{path}"), headers=headers, timeout=10, **kw)


def test_the_greeter_answers_with_the_name_and_the_image_hash(system: System) -> None:
    system.push(**{"from": "bob", "type": "text", "content": "hello"})
    [greeting] = system.wait_for(lambda: texts_to(system, "bob"), what="the greeting")
    assert "Bob (Head Office)" in greeting
    picture = base64.b64encode(PNG).decode()
    system.push(**{"from": "carol", "type": "image", "image": picture, "filename": "cat.png"})
    [about] = system.wait_for(lambda: texts_to(system, "carol"), what="the image's description")
    assert (
        about == f"cat.png: {len(PNG)} bytes, image/png, sha256 {hashlib.sha256(PNG).hexdigest()}"
    )


def test_the_gateway_over_http_and_one_gettoken(system: System) -> None:
    user = gateway(system, "user/get", params={"userid": "alice"})
    assert user.status_code == 200 and user.json()["name"] == "Alice"
    system.push(**{"from": "alice", "type": "image", "image": base64.b64encode(PNG).decode()})
    system.wait_for(lambda: texts_to(system, "alice"), what="the image's description")
    media_id = next(
        m["media_id"] for m in system.fake("GET", "/fake/media")["media"] if m["app"] == "default"
    )
    media = gateway(system, "media/get", params={"media_id": media_id})
    assert media.content == PNG and media.headers["content-type"] == "image/png"
    refused = gateway(system, "user/delete", params={"userid": "alice"})
    assert refused.status_code == 403 and "SENDER_GATEWAY_APIS" in refused.json()["error"]
    counted = stats(system)
    assert "user/delete" not in counted["api_calls"]
    assert counted["gettoken"]["default"] == 1  # the sender's token served every call
    system.fake("POST", "/fake/faults", json={"revoke_tokens": True})
    assert gateway(system, "user/get", params={"userid": "bob"}).json()["errcode"] == 0
    assert stats(system)["gettoken"]["default"] == 2
