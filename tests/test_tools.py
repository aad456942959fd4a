"""Operator commands: keygen, deadletter list/replay/drop, check, and configuration errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from devkit.embedded_redis import free_port
from services.cli import main
from shared.bus import names
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer
from shared.config import load_settings
from shared.protocol.crypto import CallbackCrypto
from tests import helpers


def run_cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keygen_output_is_accepted(capsys: Any) -> None:
    assert main(["keygen"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    settings = load_settings(
        {"WECOM_CORP_ID": "wwcorp", "WECOM_AGENT_ID": "1", **lines, "REDIS_URL": "redis://x"}
    )
    app = settings.app()
    assert app.token is not None and app.encoding_aes_key is not None
    crypto = CallbackCrypto(app.token.get(), app.encoding_aes_key.get(), "wwcorp")
    assert crypto.decrypt(crypto.encrypt(b"hello")) == b"hello"
    assert main(["keygen"]) == 0
    assert dict(line.split("=", 1) for line in capsys.readouterr().out.split()) != lines


def test_a_service_with_bad_configuration_says_which_variable() -> None:
    out = run_cli(
        "ingress",
        env={
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "WECOM_CORP_ID": "wwcorp",
            "WECOM_AGENT_ID": "1",
            "WECOM_TOKEN": "tok",
            "WECOM_ENCODING_AES_KEY": "tooshort",
        },
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "WECOM_ENCODING_AES_KEY" in line and "43" in line


def test_sender_without_secret_refuses_to_start() -> None:
    out = run_cli(
        "sender",
        env={"REDIS_URL": "redis://127.0.0.1:1/0", "WECOM_CORP_ID": "c", "WECOM_AGENT_ID": "1"},
    )
    assert out.returncode == 2
    assert "WECOM_SECRET: not set" in out.stderr


def test_check_reports_unreachable_redis_and_wecom() -> None:
    port = free_port()
    out = run_cli(
        "check",
        env={
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "WECOM_CORP_ID": "wwcorp",
            "WECOM_AGENT_ID": "1",
            "WECOM_SECRET": "a-secret-value-xyz",
            "WECOM_API_BASE": f"http://127.0.0.1:{port}",
        },
    )
    assert out.returncode == 1
    assert "redis: error: unreachable" in out.stdout
    assert "wecom[default] gettoken: error: unreachable" in out.stdout
    assert "a-secret-value-xyz" not in out.stdout + out.stderr


def test_help_names_no_handbook() -> None:
    for argv in ((), ("deadletter",), ("check",), ("send",)):
        out = run_cli(*argv, "--help", env={})
        assert out.returncode == 0 and "usage: wecom-bus" in out.stdout
        assert "§" not in out.stdout and "DESIGN" not in out.stdout


async def _dead_letters(redis: Redis) -> None:
    """Two events the handler rejects, both dead-lettered by the real runtime."""

    async def reject(delivery: Delivery) -> list[Output]:
        raise Reject(f"poison {json.loads(delivery.fields[b'data'])['n']} for the test")

    for n in range(2):
        await redis.xadd(names.events(), {"data": json.dumps({"n": n})})
    options = ConsumerOptions(start="backlog")
    consumer = Consumer(redis, stream=names.events(), group="team", handler=reject, options=options)
    await consumer.run_burst()
    assert await redis.xlen(names.deadletter()) == 2


async def test_deadletter_list_replay_and_drop(redis: Redis, redis_url: str) -> None:
    await _dead_letters(redis)
    env = {"REDIS_URL": redis_url}
    listed = run_cli("deadletter", "list", env=env)
    assert listed.returncode == 0
    assert listed.stdout.count("for the test") == 2
    assert "wecom:events/team" in listed.stdout
    assert "2 shown of 2 dead letter(s)" in listed.stderr
    rows = {line.split()[8]: line.split() for line in listed.stdout.splitlines()}  # by n
    first, replayed_id = rows["0"][0], rows["0"][4]
    second = rows["1"][0]

    replayed = run_cli("deadletter", "replay", first, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"{first} replayed: {replayed_id} pending again for group team" in replayed.stdout
    # Pending again for that group only, under its original id; a later run sees it again.
    pending = await redis.xpending(names.events(), "team")
    assert pending["pending"] == 1
    assert await redis.xlen(names.deadletter()) == 1
    seen: list[str] = []

    async def accept(delivery: Delivery) -> list[Output]:
        seen.append(delivery.entry_id)
        return []

    team = Consumer(redis, stream=names.events(), group="team", handler=accept)
    await team.run_burst()
    assert seen == [replayed_id]

    again = run_cli("deadletter", "replay", first, env=env)
    assert again.returncode == 1 and f"no such dead letter: {first}" in again.stderr
    dropped = run_cli("deadletter", "drop", second, env=env)
    assert dropped.returncode == 0 and f"{second} dropped" in dropped.stdout
    assert await redis.xlen(names.deadletter()) == 0
    assert run_cli("deadletter", "drop", "--all", env=env).returncode == 1  # nothing left
    assert run_cli("deadletter", "replay", env=env).returncode == 2  # names nothing


async def test_deadletter_filters_json_and_bulk(redis: Redis, redis_url: str) -> None:
    await _dead_letters(redis)
    env = {"REDIS_URL": redis_url}
    listed = run_cli("deadletter", "list", "--json", "--reason", "POISON 1", env=env)
    assert listed.returncode == 0, listed.stderr
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert record["group"] == "team" and record["data"] == {"n": 1}
    assert record["reason"] == "Reject: poison 1 for the test" and record["errcode"] is None
    assert run_cli("deadletter", "list", "--group", "nobody", env=env).stdout == ""
    assert run_cli("deadletter", "list", "--since", "1h", env=env).stdout.count("\n") == 2
    bad = run_cli("deadletter", "list", "--since", "yesterday-ish", env=env)
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr
    assert run_cli("deadletter", "drop", "not-an-id", env=env).returncode == 2
    assert run_cli("deadletter", "drop", record["id"], "--all", env=env).returncode == 2
    assert run_cli("deadletter", "drop", "--all", "--group", "nobody", env=env).returncode == 1
    replayed = run_cli("deadletter", "replay", "--all", "--group", "team", env=env)
    assert replayed.returncode == 0 and replayed.stdout.count("pending again") == 2
    assert await redis.xlen(names.deadletter()) == 0
    assert (await redis.xpending(names.events(), "team"))["pending"] == 2


def test_helpers_app_is_consistent() -> None:
    # The fixed test app of tests/helpers.py is itself a valid configuration.
    helpers.settings("redis://127.0.0.1:1/0").require("secret", "token", "encoding_aes_key")


def test_send_says_why_it_cannot_upload_or_read(tmp_path: Path) -> None:
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "WECOM_CORP_ID": "wwcorp",
        "WECOM_AGENT_ID": "1",
        "SENDER_API_KEY": "k" * 24,
    }
    image = tmp_path / "dot.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    sender = f"http://127.0.0.1:{free_port()}"
    out = run_cli("send", "--to", "u", "--image", str(image), "--sender-url", sender, env=env)
    assert out.returncode == 1
    assert f"wecom-bus send: the sender at {sender} is unreachable" in out.stderr
    body = tmp_path / "body.json"
    body.write_text("{not json", encoding="utf-8")
    out = run_cli("send", "--to", "u", "--json", str(body), env=env)
    assert out.returncode == 2 and f"--json {body}:" in out.stderr
    out = run_cli("send", "--to", "u", "--text", "hi", env=env)
    assert out.returncode == 1 and "Redis unreachable" in out.stderr
