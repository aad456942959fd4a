"""Reliability under failure, every part a real process (docs/reliability.md).

- the chaos run: callbacks delivered up to three times while responder and sender are SIGKILLed
  and restarted at random moments and Redis (AOF, appendfsync always) is SIGKILLed once;
  CI-sized here, 10,000 callbacks with ``--chaos-full`` (``make chaos``);
- WeCom API faults (-1 bursts, 45009 and 60020 pausing the app, a revoked token, slow answers,
  timeouts): every message delivered once, only errors of one message dead-lettered;
- a Redis outage: the ingress answers 503 and recovers, consumers reconnect, the sender keeps
  its token, nothing acknowledged is lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from redis import Redis

from devkit.embedded_redis import EmbeddedRedis
from shared.bus import names
from tests.chaos import ChaosPlan, dump, kill, members_for, restart, run_chaos
from tests.system import System, running_system

pytestmark = pytest.mark.slow

FULL = ChaosPlan(
    callbacks=10_000,
    rate=40.0,
    kill_every=(3.0, 8.0),
    drain_timeout=300.0,
    settle=8.0,
)
CI = ChaosPlan()


@pytest.fixture
def aof_redis() -> Iterator[EmbeddedRedis]:
    """Our own server, AOF fsynced on every write (what the docs recommend for zero loss)."""
    with EmbeddedRedis(appendfsync="always") as server:
        yield server


@pytest.mark.timeout(900)
def test_chaos_run_loses_and_duplicates_nothing(
    request: pytest.FixtureRequest,
    aof_redis: EmbeddedRedis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = FULL if request.config.getoption("--chaos-full") else CI
    with running_system(aof_redis.url, tmp_path, FAKE_WECOM_MEMBERS=members_for(plan)) as system:
        report = run_chaos(plan, aof_redis, system)
    (tmp_path / "chaos-report.json").write_text(dump(report))
    with capsys.disabled():
        print("\n" + report.summary())
    assert report.kills["redis"] == 1
    assert report.kills["responder"] + report.kills["sender"] >= 3
    assert report.accepted >= plan.callbacks * 0.9  # the outage is short: retries get through
    assert report.drained, "the bus did not drain"
    assert report.lost == []
    assert report.duplicated == {}
    assert report.duplicate_events == {}
    assert report.deadlettered == []
    assert report.unexpected == []
    assert report.dropped == 0


# ---------------------------------------------------------------- WeCom API faults


def delivered(system: System) -> dict[str, list[dict[str, Any]]]:
    """message/send records by text content: every record, whatever its status."""
    by_text: dict[str, list[dict[str, Any]]] = {}
    for message in system.sends():
        body = message["body"]
        text = body.get("text", {}).get("content", "") if isinstance(body, dict) else ""
        by_text.setdefault(text, []).append(message)
    return by_text


def deliveries_of(records: list[dict[str, Any]]) -> int:
    return sum(1 for r in records if r["status"] == "delivered")


def dead_letters(redis_url: str, prefix: str = names.DEFAULT_PREFIX) -> list[dict[str, str]]:
    client = Redis.from_url(redis_url)
    try:
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(names.deadletter(prefix))
        )
    finally:
        client.close()
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in entries
    ]


def ready(system: System, service: str) -> bool:
    return httpx.get(system.url(service, "/readyz")).status_code == 200


@pytest.mark.timeout(240)
def test_wecom_faults_deliver_every_message_once(redis_url: str, tmp_path: Path) -> None:
    prefix = "faults"
    members = [f"f{i:02d}" for i in range(16)]
    everyone = ",".join(["alice", *members])
    with running_system(
        redis_url,
        tmp_path,
        BUS_PREFIX=prefix,
        FAKE_WECOM_MEMBERS=everyone,
        SENDER_RATE_LIMITED_WAIT="10",  # WeCom's minute, shortened for the test
        SENDER_CIRCUIT_PROBE="5",
    ) as system:
        system.push(**{"from": "alice", "content": "warm up"})
        system.wait_for(lambda: deliveries_of(delivered(system).get("warm up", [])) == 1)
        assert system.fake("GET", "/fake/stats")["gettoken"]["default"] == 1

        # The token is revoked early: the next send meets 42001, refetches, retries once.
        assert system.fake("POST", "/fake/faults", json={"revoke_tokens": True})["revoked"] == 1
        system.push(**{"from": "alice", "content": "after revocation"})
        system.wait_for(lambda: deliveries_of(delivered(system).get("after revocation", [])) == 1)
        assert system.fake("GET", "/fake/stats")["gettoken"]["default"] == 2

        # Trouble, in the order the next message/send calls meet it. 45009 pauses the whole
        # app (its circuit) for SENDER_RATE_LIMITED_WAIT; the probe after it meets the rest.
        for fault in (
            {"errcode": -1, "count": 3},
            {"errcode": 45009, "count": 1},
            {"errcode": 45033, "count": 1},
            {"delay": 0.5, "count": 2},  # slow but within the handler's time
            {"delay": 2.5, "count": 1},  # slower than the handler's time: retried
            {"timeout": True, "count": 1, "seconds": 5},
            {"timeout": True, "deliver": True, "count": 1, "seconds": 5},  # sent, answer lost
            {"reset": True, "count": 2},
        ):
            system.fake("POST", "/fake/faults", json={**fault, "path": "message/send"})
        texts = [f"fault check {m}" for m in members]
        for member, text in zip(members, texts, strict=True):
            system.push(**{"from": member, "content": text})
        system.wait_for(
            lambda: all(deliveries_of(delivered(system).get(t, [])) == 1 for t in texts),
            timeout=90,  # the app's pause after 45009, plus backoff and a claim round
            what="every message",
        )
        rate_limited = [
            t
            for t, records in delivered(system).items()
            if any("45009" in r["errmsg"] for r in records)
        ]
        assert len(rate_limited) == 1
        assert system.fake("GET", "/fake/faults")["faults"] == []
        # 60020 (IP not trusted) pauses the app until a probe succeeds; 81013 is one message's.
        system.fake("POST", "/fake/faults", json={"errcode": 60020, "path": "message/send"})
        system.push(**{"from": "alice", "content": "meets 60020"})
        system.wait_for(
            lambda: any(r["errcode"] == 60020 for r in delivered(system).get("meets 60020", [])),
            what="the 60020",
        )
        system.push(**{"from": "nobody-here", "content": "to no member"})  # WeCom: 81013
        system.wait_for(lambda: len(dead_letters(redis_url, prefix)) == 1, what="a dead letter")
        system.wait_for(
            lambda: deliveries_of(delivered(system).get("meets 60020", [])) == 1,
            timeout=30,
            what="the message paused by 60020",
        )
        system.wait_for(lambda: _idle(redis_url, prefix), what="an idle outbox")
        by_text = delivered(system)
        stats = system.fake("GET", "/fake/stats")

    assert {t: deliveries_of(by_text[t]) for t in texts} == dict.fromkeys(texts, 1)
    assert deliveries_of(by_text["meets 60020"]) == 1
    assert deliveries_of(by_text["to no member"]) == 0
    [letter] = dead_letters(redis_url, prefix)
    assert letter["error"].startswith("Reject: errcode 81013")
    assert letter["stream"] == names.outbox(prefix)
    assert deliveries_of(by_text["after revocation"]) == 1
    assert stats["gettoken"]["default"] == 2  # no refetch for any fault but the revocation
    # The answer lost after delivery was resent with the duplicate check, and WeCom dropped it.
    assert stats["suppressed"] >= 1


def _idle(redis_url: str, prefix: str) -> bool:
    client = Redis.from_url(redis_url)
    try:
        for group in client.xinfo_groups(names.outbox(prefix)):
            if group["pending"] or group.get("lag"):
                return False
        return not client.zcard(names.delayed(prefix))
    finally:
        client.close()


# ---------------------------------------------------------------- Redis outage


def test_a_redis_outage_is_ridden_out(aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    with running_system(aof_redis.url, tmp_path) as system:
        for i in range(3):
            system.push(**{"from": f"user{i}", "content": f"before {i}"})
        system.wait_for(lambda: all(f"before {i}" in delivered(system) for i in range(3)))
        assert system.fake("GET", "/fake/stats")["gettoken"]["default"] == 1

        aof_redis.kill()
        refused = system.push(**{"from": "user10", "content": "during", "retries": 0})
        assert [a["status"] for a in refused["attempts"]] == [503]
        assert httpx.get(system.url("ingress", "/readyz")).status_code == 503
        system.wait_for(
            lambda: httpx.get(system.url("sender", "/readyz")).status_code == 503,
            what="the sender to notice",
        )
        api = httpx.post(
            system.url("sender", "/v1/messages"),
            headers={"Authorization": f"Bearer {system.api_key}"},
            json={"touser": "user11", "msgtype": "text", "text": {"content": "api during"}},
        )
        assert api.status_code == 503
        assert system.api_key not in api.text

        aof_redis.start()
        for service in ("ingress", "responder", "sender"):
            system.wait_for(
                partial(ready, system, service), timeout=30, what=f"{service} to recover by itself"
            )
        accepted = system.push(**{"from": "user12", "content": "after"})
        assert accepted["ok"] is True
        system.wait_for(lambda: "after" in delivered(system), what="a reply after the outage")
        by_text = delivered(system)
        stats = system.fake("GET", "/fake/stats")
        system.stack.check_alive()  # nobody died of the outage
        logs = system.logs()

    assert all(deliveries_of(by_text[f"before {i}"]) == 1 for i in range(3))
    assert deliveries_of(by_text["after"]) == 1
    assert "during" not in by_text  # refused with 503, so WeCom would retry it: not ours yet
    assert stats["gettoken"]["default"] == 1  # the token survived in Redis (AOF)
    assert "redis unreachable; retrying with backoff" in logs
    assert "redis reachable again" in logs


# ---------------------------------------------------------------- a consumer dies at a quiet time


@pytest.mark.parametrize(("service", "stream"), [("responder", "events"), ("sender", "outbox")])
def test_work_left_by_a_dead_consumer_is_taken_over_when_nothing_else_happens(
    aof_redis: EmbeddedRedis, tmp_path: Path, service: str, stream: str
) -> None:
    """The entry a killed replica held is claimed after BUS_CLAIM_IDLE (2 s here), with no other
    traffic to wake anything up: the quiet-hours case of "responder or sender killed" in
    docs/reliability.md §2."""
    key = names.events() if stream == "events" else names.outbox()
    group = names.RESPONDER_GROUP if service == "responder" else names.SENDER_GROUP
    client = Redis.from_url(aof_redis.url)
    with running_system(aof_redis.url, tmp_path) as system:
        kill(system, service)
        system.push(**{"from": "user7", "content": f"left by a dead {service}"})
        system.wait_for(lambda: client.xlen(key) == 1, what=f"the entry on {key}")
        # What a replica killed with the entry in hand leaves behind: pending, owner gone.
        assert client.xreadgroup(group, "killed-replica", {key: ">"}, count=1)
        restart(system, service)
        system.wait_for(
            lambda: deliveries_of(delivered(system).get(f"left by a dead {service}", [])) == 1,
            timeout=20,  # BUS_CLAIM_IDLE is 2 s; the rest is process start-up
            what="the reply, after a claim",
        )
    client.close()


def test_the_report_is_json(tmp_path: Path) -> None:
    from tests.chaos import ChaosReport

    report = ChaosReport(callbacks=3, accepted=3, lost=[2])
    assert not report.ok
    assert json.loads(dump(report))["lost"] == [2]
    assert "lost 1" in report.summary()
