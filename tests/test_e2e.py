"""End to end, every part a real process: fake WeCom → ingress → responder → sender → fake WeCom."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.protocol.crypto import generate_encoding_aes_key, generate_token
from tests.system import System, fresh_database, running_system

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    fresh_database(redis_url)
    with running_system(redis_url, tmp_path_factory.mktemp("e2e")) as running:
        yield running


def texts_to(system: System, user: str) -> list[str]:
    return [
        m["body"]["text"]["content"]
        for m in system.sends()
        if m["body"].get("touser") == user and m["body"].get("msgtype") == "text"
    ]


def test_a_question_gets_the_reply_rule(system: System) -> None:
    result = system.push(**{"from": "alice", "type": "text", "content": "你好吗?"})
    assert result["ok"] is True
    replies = system.wait_for(lambda: texts_to(system, "alice"), what="a reply to alice")
    assert replies == ["你好!"]
    [message] = [m for m in system.sends() if m["body"].get("touser") == "alice"]
    assert message["status"] == "delivered"
    assert message["body"]["agentid"] == int(system.env["WECOM_AGENT_ID"])


def test_a_callback_delivered_three_times_gets_one_reply(system: System) -> None:
    result = system.push(**{"from": "bob", "type": "text", "content": "在吗？", "duplicate": 3})
    assert len(result["attempts"]) == 3
    system.wait_for(lambda: texts_to(system, "bob"), what="a reply to bob")
    # Give a wrong second reply every chance to show up: wait for a later marker message.
    system.push(**{"from": "bob", "type": "text", "content": "marker?"})
    system.wait_for(lambda: "marker!" in texts_to(system, "bob"), what="the marker reply")
    assert texts_to(system, "bob") == ["在！", "marker!"]


def test_events_flow_without_replies(system: System) -> None:
    before = len(system.sends())
    for spec in (
        {"type": "event", "event": "enter_agent"},
        {"type": "event", "event": "click", "event_key": "menu_1"},
        {"type": "event", "event": "LOCATION", "latitude": 23.1, "longitude": 113.3},
    ):
        assert system.push(**{"from": "carol", **spec})["ok"] is True
    system.push(**{"from": "carol", "type": "text", "content": "done?"})
    system.wait_for(lambda: texts_to(system, "carol") == ["done!"], what="carol's reply")
    assert len(system.sends()) == before + 1


def test_help_lists_the_behaviours(system: System) -> None:
    system.push(**{"from": "user1", "type": "text", "content": "/help"})
    [reply] = system.wait_for(lambda: texts_to(system, "user1"), what="the help reply")
    assert "/help" in reply


def test_the_send_api_reaches_wecom(system: System) -> None:
    response = httpx.post(
        system.url("sender", "/v1/messages"),
        headers={"Authorization": f"Bearer {system.api_key}"},
        json={"touser": "user2", "msgtype": "markdown", "markdown": {"content": "**hi**"}},
    )
    assert response.status_code == 202
    request_id = response.json()["id"]
    system.wait_for(
        lambda: [m for m in system.sends() if m["body"].get("touser") == "user2"],
        what="the API message",
    )
    status = httpx.get(
        system.url("sender", f"/v1/messages/{request_id}"),
        headers={"Authorization": f"Bearer {system.api_key}"},
    ).json()
    assert status["status"] == "sent" and status["msgid"]


def test_the_send_command_reaches_wecom(system: System) -> None:
    out = system.cli("send", "--to", "user3", "--text", "from the shell")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("cli-")  # the request id, named by its origin
    system.wait_for(lambda: texts_to(system, "user3") == ["from the shell"], what="the CLI message")


def test_the_send_command_names_a_bad_field(system: System) -> None:
    out = system.cli("send", "--to", "user3", "--text", "")
    assert out.returncode == 2
    assert "$.text.content" in out.stderr


def test_two_apps_stay_separate(redis_url: str, tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text(
        "".join(
            f'[apps.{name}]\ncorp_id = "wwcorp"\nagent_id = {agent}\nsecret = "secret-{name}"\n'
            f'token = "{generate_token()}"\nencoding_aes_key = "{generate_encoding_aes_key()}"\n\n'
            for name, agent in (("default", 1000002), ("hr", 1000003))
        )
    )
    with running_system(
        redis_url, tmp_path, WECOM_APPS_FILE=str(apps), BUS_PREFIX="twoapps"
    ) as system:
        system.push(**{"app": "default", "from": "alice", "type": "text", "content": "a?"})
        system.push(**{"app": "hr", "from": "alice", "type": "text", "content": "b?"})
        system.wait_for(lambda: len(system.sends()) == 2, what="two replies")
        by_app = {m["app"]: m["body"] for m in system.sends()}
        assert by_app["default"]["text"]["content"] == "a!"
        assert by_app["default"]["agentid"] == 1000002
        assert by_app["hr"]["text"]["content"] == "b!"
        assert by_app["hr"]["agentid"] == 1000003
        stats = system.fake("GET", "/fake/stats")
        assert stats["gettoken"] == {"default": 1, "hr": 1}


def test_no_process_is_left_behind(redis_url: str, tmp_path: Path) -> None:
    with running_system(redis_url, tmp_path, services=("fake-wecom", "ingress")) as system:
        pids = [p.pid for _, p in system.stack.children]
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_check_passes_against_a_running_system(system: System) -> None:
    out = system.cli("check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "redis: ok" in out.stdout
    assert "wecom[default] gettoken: ok" in out.stdout
    assert "wecom[default] agent/get: ok (app 'default', AgentId 1000002, enabled" in out.stdout
    assert system.env["WECOM_SECRET"] not in out.stdout + out.stderr


@pytest.mark.parametrize("key_from", ["SENDER_API_KEY", "SENDER_API_KEY_FILE"])
def test_send_image_uploads_through_the_sender_first(
    system: System, tmp_path: Path, key_from: str
) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )
    image = tmp_path / "dot.png"
    image.write_bytes(png)
    env = {**system.env, "SENDER_URL": system.url("sender")}
    user = "user4" if key_from == "SENDER_API_KEY" else "user5"
    if key_from == "SENDER_API_KEY_FILE":  # a mounted secret: the key only in a file
        key_file = tmp_path / "sender-api-key"
        key_file.write_text("x" * 24 + "\n", encoding="utf-8")
        env = {k: v for k, v in env.items() if k != "SENDER_API_KEY"}
        env["SENDER_API_KEY_FILE"] = str(key_file)
        out = system.cli("send", "--to", user, "--image", str(image), env=env)
        assert out.returncode == 1 and "upload failed (403)" in out.stderr  # the file's key
        key_file.write_text(system.env["SENDER_API_KEY"] + "\n", encoding="utf-8")
    out = system.cli("send", "--to", user, "--image", str(image), env=env)
    assert out.returncode == 0, out.stderr
    [message] = system.wait_for(
        lambda: [m for m in system.sends() if m["body"].get("touser") == user],
        what="the image message",
    )
    assert message["body"]["msgtype"] == "image"
    assert message["status"] == "delivered"
    assert system.fake("GET", "/fake/stats")["media"] >= 1


def test_dev_refuses_ports_in_use(system: System) -> None:
    out = system.cli(
        "dev",
        "--port-base",
        str(system.ports["ingress"]),
        env={k: v for k, v in system.env.items() if not k.startswith(("WECOM_", "REDIS_"))},
    )
    assert out.returncode == 1
    assert f"port {system.ports['ingress']} (ingress) is in use" in out.stderr
