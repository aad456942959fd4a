"""End to end with real processes: authentic callbacks of any shape are stored whole, once.

The whole system runs (fake WeCom, ingress, responder, sender). The fake WeCom's push builds
only the message shapes it knows, so the odd callbacks here are sealed the way it seals every
callback (``CallbackCrypto.build_callback`` with the app's Token, EncodingAESKey and CorpID, a
fresh nonce and timestamp per attempt) and POSTed to the ingress process by ``deliver``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from shared.bus import names
from shared.protocol.crypto import CallbackCrypto
from shared.schemas.envelope import EventEnvelope, decode_envelope
from shared.schemas.inbound import TextMessage, UnknownEvent, UpdateTagEvent
from tests.inbound_cases import expected_raw, odd_callbacks
from tests.system import System, fresh_database, running_system

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    fresh_database(redis_url)
    with running_system(redis_url, tmp_path_factory.mktemp("e2e-inbound")) as running:
        yield running


def deliver(system: System, plaintext: bytes) -> int:
    """One delivery attempt of ``plaintext`` as WeCom makes it; the ingress's status."""
    env = system.env
    crypto = CallbackCrypto(env["WECOM_TOKEN"], env["WECOM_ENCODING_AES_KEY"], env["WECOM_CORP_ID"])
    params, body = crypto.build_callback(
        plaintext,
        timestamp=str(int(time.time())),
        nonce=str(secrets.randbelow(10**10)),
        agent_id=int(env["WECOM_AGENT_ID"]),
    )
    response = httpx.post(system.url("ingress", "/callback"), params=params, content=body)
    return response.status_code


def stored(system: System, after: str) -> list[EventEnvelope]:
    """The events stream's entries after entry id ``after`` (the system's groups are left be)."""
    with redis.Redis.from_url(system.env["REDIS_URL"]) as client:
        rows: Any = client.xrange(names.events(), min=f"({after}")
    return [decode_envelope(fields[b"data"]) for _, fields in rows]


def replied(system: System, user: str, text: str) -> bool:
    return any(
        m["body"].get("touser") == user and m["body"].get("text", {}).get("content") == text
        for m in system.sends()
    )


def test_odd_authentic_callbacks_are_stored_whole_and_retries_add_nothing(
    system: System,
) -> None:
    with redis.Redis.from_url(system.env["REDIS_URL"]) as client:
        last: Any = client.xrevrange(names.events(), count=1)
    after = last[0][0].decode() if last else "0-0"
    cases = odd_callbacks(int(time.time()), secrets.randbits(62))
    assert [deliver(system, plaintext) for plaintext in cases.values()] == [200] * len(cases)
    first = stored(system, after)
    assert [e.raw for e in first] == [expected_raw(p) for p in cases.values()]

    retries = [deliver(system, plaintext) for plaintext in cases.values()]
    assert retries == [200] * len(cases)
    assert stored(system, after) == first

    by_name = dict(zip(cases, first, strict=True))
    kf = by_name["kf_event"].event
    assert isinstance(kf, UnknownEvent) and kf.event == "kf_msg_or_event"
    assert by_name["kf_event"].raw["OpenKfId"] == "wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw"
    tags = [by_name["update_tag_1"], by_name["update_tag_2"]]
    assert all(isinstance(t.event, UpdateTagEvent) for t in tags)
    assert tags[0].event.create_time == tags[1].event.create_time
    assert [t.raw["AddUserItems"] for t in tags] == ["zhangsan,lisi", "wangwu"]
    text = by_name["text_with_extras"]
    assert isinstance(text.event, TextMessage)
    assert text.raw["Mentions"] == {"User": ["bob", "carol"]}
    assert by_name["image_with_extras"].raw["Label"] == ["first", "second", "third"]

    # The responder read the odd entries without failing: a later question is still answered.
    assert system.push(**{"from": "carol", "type": "text", "content": "还在吗?"})["ok"] is True
    system.wait_for(lambda: replied(system, "carol", "还在!"), what="a reply to carol")
    assert "Traceback" not in system.logs()
