"""``wecom-bus check``: WeCom (gettoken + agent/get) against the fake WeCom, and ``--redis``
against the real embedded Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from devkit.embedded_redis import EmbeddedRedis
from devkit.fakewecom.app import create_app
from devkit.fakewecom.state import FakeApp, FakeConfig
from services.commands import redis_check
from services.commands.check import app_findings, circuit_finding
from shared.bus import deadletter, outbox
from shared.config import AppSettings, Secret
from shared.wecom import circuit
from shared.wecom.errors import WeComAPIError, raise_for_errcode
from tests import helpers
from tests.system import System, running_system


@pytest.fixture(scope="module")
def fake(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The fake WeCom as its own process (the check talks to it over HTTP, as to WeCom)."""
    with running_system(redis_url, tmp_path_factory.mktemp("check"), ("fake-wecom",)) as system:
        yield system


def check(system: System, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return system.cli("check", *argv, env={**system.env, **env})


def lines(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each printed line by its item (the part before the first ': ')."""
    return dict(line.split(": ", 1) for line in out.stdout.splitlines())


def test_check_passes_with_a_good_configuration(fake: System) -> None:
    out = check(fake)
    assert out.returncode == 0, out.stdout + out.stderr
    found = lines(out)
    assert found["configuration"] == "ok (1 app(s): default)"
    assert found["redis"] == "ok"
    assert found["wecom[default] gettoken"] == "ok (expires_in=7200)"
    assert found["wecom[default] agent/get"].startswith("ok (app 'default', AgentId 1000002")
    assert fake.env["WECOM_SECRET"] not in out.stdout + out.stderr


def test_check_names_a_wrong_agent_id(fake: System) -> None:
    out = check(fake, WECOM_AGENT_ID="1000099")
    assert out.returncode == 1
    found = lines(out)
    assert found["wecom[default] gettoken"].startswith("ok")  # the Secret is right
    assert found["wecom[default] agent/get"].startswith(
        "error: errcode 40056: WECOM_AGENT_ID=1000099 is not the AgentId"
    )


def test_check_names_the_ip_to_trust_on_60020(fake: System) -> None:
    fake.fake("POST", "/fake/faults", json={"errcode": 60020, "path": "agent/get"})
    out = check(fake)
    assert out.returncode == 1
    line = lines(out)["wecom[default] agent/get"]
    assert line.startswith("error: errcode 60020:") and "add 127.0.0.1 to" in line
    assert "企业可信IP" in line


def test_check_redis_adds_the_server_to_the_wecom_checks(fake: System) -> None:
    out = check(fake, "--redis")
    assert out.returncode == 0, out.stdout + out.stderr
    items = list(lines(out))
    assert items[:2] == ["configuration", "redis server"]
    assert {"redis maxmemory-policy", "wecom[default] agent/get"} <= set(items)


async def test_an_open_circuit_is_an_error_line_with_its_reason_and_until(fake: System) -> None:
    """The circuit is opened the way the sender opens it (WeCom's 60020 answer → its error,
    then ``circuit.trip`` with the sender's arguments); check reads it back from Redis."""
    with pytest.raises(WeComAPIError) as refused:
        raise_for_errcode(
            {"errcode": 60020, "errmsg": "not allow to access from your ip, from ip: 203.0.113.7"}
        )
    exc = refused.value
    prefix, now = fake.env.get("BUS_PREFIX", "wecom"), time.time()
    redis = Redis.from_url(fake.env["REDIS_URL"])
    try:
        opened = await circuit.trip(
            redis,
            prefix,
            "default",
            reason="config",
            errcode=exc.errcode,
            advice=exc.advice,
            probe=False,
            waits=[600.0],
            now=now,
        )
        assert opened
        out = check(fake)
        line = lines(out)["wecom[default] circuit"]
        until = datetime.fromtimestamp(now + 600, UTC).strftime("%Y-%m-%d %H:%M")
        assert out.returncode == 1, out.stdout
        assert line.startswith(f"error: open: sends paused until {until}")
        assert "configuration refused, errcode 60020: " in line and "203.0.113.7" in line
        assert exc.advice in line
    finally:
        assert await circuit.close(redis, prefix, "default")
        await redis.aclose()
    out = check(fake)
    assert out.returncode == 0, out.stdout + out.stderr
    assert lines(out)["wecom[default] circuit"] == "ok (closed)"


def test_a_probing_circuit_warns_and_a_rate_limit_is_named() -> None:
    state = circuit.CircuitState(
        app="hr", state="probing", reason="rate_limited", errcode=45009, advice="slow down"
    )
    assert circuit_finding(state).line() == (
        "wecom[hr] circuit: warning: probing: the next send tests the app again "
        "(rate limited, errcode 45009: slow down)"
    )


def _fake_transport(*apps: FakeApp) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(FakeConfig(apps=apps)))


def _app(name: str, agent_id: int, secret: str = helpers.SECRET) -> AppSettings:
    return msgspec.structs.replace(
        helpers.settings("redis://127.0.0.1:1/0").app(), name=name, agent_id=agent_id,
        secret=Secret(secret),
    )  # fmt: skip


def _fake_app(app: AppSettings, *, closed: bool = False) -> FakeApp:
    return msgspec.structs.replace(FakeApp.from_settings(app, None), closed=closed)


async def test_a_disabled_app_fails_the_check() -> None:
    app = _app("default", 1000002)
    found = await app_findings(
        app, "http://fake", transport=_fake_transport(_fake_app(app, closed=True))
    )
    assert [f.level for f in found] == ["ok", "error"]
    assert "is disabled (close=1)" in found[1].text and "应用管理" in found[1].text


async def test_another_apps_agent_id_and_a_wrong_secret() -> None:
    hr, ops = _app("hr", 1000003), _app("ops", 1000004, secret="ops-secret-value")
    transport = _fake_transport(_fake_app(hr), _fake_app(ops))
    confused = msgspec.structs.replace(hr, agent_id=ops.agent_id)  # hr's Secret, ops' AgentId
    [token, agent] = await app_findings(confused, "http://fake", transport=transport)
    assert token.level == "ok" and agent.level == "error"
    assert agent.text.startswith("errcode 301002:") and "=1000004 is not the AgentId" in agent.text
    wrong_secret = msgspec.structs.replace(hr, secret=Secret("not-the-secret"))
    [token] = await app_findings(wrong_secret, "http://fake", transport=transport)
    assert token.level == "error" and token.text.startswith("errcode 40001:")
    assert "not-the-secret" not in token.text
    ingress_only = msgspec.structs.replace(hr, secret=None)
    [note] = await app_findings(ingress_only, "http://fake", transport=transport)
    assert note.level == "ok" and "WeCom not called" in note.text


def run_check_redis(redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "check", "--redis"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent.parent,
    )


async def test_check_redis_reports_each_promise(redis: Redis, redis_url: str) -> None:
    await redis.script_flush()
    out = run_check_redis(redis_url)
    assert out.returncode == 0, out.stdout + out.stderr
    found = lines(out)
    version = (await redis.info("server"))["redis_version"]
    assert found["redis server"].startswith("ok (") and version in found["redis server"]
    assert "XAUTOCLAIM supported" in found["redis server"]
    scripts = redis_check.project_scripts()
    assert (
        found["redis scripts"]
        == f"ok ({len(scripts)} loaded; keys under BUS_PREFIX='wecom' usable)"
    )
    shas = {s.sha for s in scripts}
    assert {deadletter._REPLAY.sha, outbox._ENQUEUE_ONCE.sha} <= shas
    assert all(await redis.script_exists(*shas))  # the check really loaded them
    assert found["redis maxmemory-policy"] == "ok (noeviction)"
    fsync = (await redis.config_get("appendfsync"))["appendfsync"]
    assert found["redis fsync"].startswith(f"warning: appendonly yes, appendfsync {fsync}")
    assert found["redis topology"] == "ok (standalone, role master, 0 connected replica(s))"


async def test_check_redis_fails_on_an_evicting_server(redis: Redis, redis_url: str) -> None:
    saved: Any = await redis.config_get("maxmemory-policy")
    policy = saved["maxmemory-policy"]
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        out = run_check_redis(redis_url)
    finally:
        await redis.config_set("maxmemory-policy", policy)
    assert out.returncode == 1
    line = lines(out)["redis maxmemory-policy"]
    assert line.startswith("error: allkeys-lru:") and "noeviction" in line


async def test_fsync_always_is_ok_and_no_aof_warns(redis: Redis) -> None:
    saved: Any = await redis.config_get("append*")
    try:
        await redis.config_set("appendfsync", "always")
        [_, _, _, fsync, _] = await redis_check.findings(redis, "wecom")
        assert fsync.line() == "redis fsync: ok (appendonly yes, appendfsync always)"
        await redis.config_set("appendonly", "no")
        [_, _, _, fsync, _] = await redis_check.findings(redis, "wecom")
        assert fsync.level == "warning" and fsync.text.startswith("appendonly no:")
    finally:
        await redis.config_set("appendonly", saved["appendonly"])
        await redis.config_set("appendfsync", saved["appendfsync"])


async def test_topology_sees_a_replica_and_refuses_one(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    primary = urlsplit(redis_url)
    host, port = primary.hostname or "127.0.0.1", primary.port or 6379
    with EmbeddedRedis(data_dir=tmp_path) as server:
        replica: Redis = Redis.from_url(server.url)
        try:
            await replica.replicaof(host, port)
            async with asyncio.timeout(20):
                while int((await redis.info("replication"))["connected_slaves"]) < 1:
                    await asyncio.sleep(0.1)
            topology = (await redis_check.findings(redis, "wecom"))[-1]
            assert topology.level == "ok" and "role master, 1 connected replica(s)" in topology.text
            topology = (await redis_check.findings(replica, "wecom"))[-1]
            assert topology.level == "error" and "role slave" in topology.text
            assert "point REDIS_URL at the primary" in topology.text
        finally:
            await replica.replicaof("NO", "ONE")
            await replica.aclose()
