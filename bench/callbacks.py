"""What the harness sends: signed callbacks as raw HTTP requests, and pre-filled stream entries.

Requests are built before any clock starts (the load generator only copies bytes), each one a
distinct WeCom text message (its own MsgId and content) from one of many members, so the ingress
never answers a duplicate and the per-member send limit never binds. A request file is a pickled
``list[bytes]``, written and read only by this harness.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlencode

from shared.protocol.crypto import CallbackCrypto, generate_encoding_aes_key, generate_token
from shared.protocol.parser import read_message
from shared.schemas.envelope import (
    EventEnvelope,
    encode_envelope,
    encode_outbox,
    outbox_entry,
)
from shared.schemas.inbound import InboundEventType
from shared.schemas.outbound import TextSend

__all__ = [
    "Credentials",
    "callback_requests",
    "content_index",
    "event_entries",
    "load_requests",
    "members",
    "outbox_entries",
    "save_requests",
    "text_plaintext",
]

CONTENT_PREFIX = "bench "
DEFAULT_SECRET = "bench-corp-secret-0000"


@dataclass(frozen=True, slots=True)
class Credentials:
    """One app's callback secrets; ``env()`` gives the WECOM_* variables the services read."""

    corp_id: str
    agent_id: int
    token: str
    aes_key: str
    secret: str = DEFAULT_SECRET

    @classmethod
    def generate(cls) -> Credentials:
        return cls("wwbenchcorp000001", 1000002, generate_token(), generate_encoding_aes_key())

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Credentials:
        return cls(
            env["WECOM_CORP_ID"],
            int(env["WECOM_AGENT_ID"]),
            env["WECOM_TOKEN"],
            env["WECOM_ENCODING_AES_KEY"],
            env.get("WECOM_SECRET", DEFAULT_SECRET),
        )

    def env(self) -> dict[str, str]:
        return {
            "WECOM_CORP_ID": self.corp_id,
            "WECOM_AGENT_ID": str(self.agent_id),
            "WECOM_TOKEN": self.token,
            "WECOM_ENCODING_AES_KEY": self.aes_key,
            "WECOM_SECRET": self.secret,
        }

    def crypto(self) -> CallbackCrypto:
        return CallbackCrypto(self.token, self.aes_key, self.corp_id)


def members(count: int) -> list[str]:
    return [f"user{i}" for i in range(count)]


def text_plaintext(creds: Credentials, *, user: str, content: str, msg_id: int) -> bytes:
    """The decrypted XML of a member's text message, as WeCom sends it."""
    return (
        f"<xml><ToUserName><![CDATA[{creds.corp_id}]]></ToUserName>"
        f"<FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id}</MsgId><AgentID>{creds.agent_id}</AgentID></xml>"
    ).encode()


def content_index(content: str) -> int | None:
    """The request index carried in a message's content (the echo keeps it), if any."""
    if content.startswith(CONTENT_PREFIX) and content[len(CONTENT_PREFIX) :].isdigit():
        return int(content[len(CONTENT_PREFIX) :])
    return None


def _request(path_query: str, body: bytes) -> bytes:
    head = (
        f"POST {path_query} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/xml\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def callback_requests(
    creds: Credentials,
    count: int,
    *,
    first_index: int = 0,
    member_count: int = 2000,
    path: str = "/callback",
) -> list[bytes]:
    """``count`` distinct signed POSTs; request i carries content "bench <first_index + i>"."""
    crypto = creds.crypto()
    users = members(member_count)
    timestamp = str(int(time.time()))
    base = int.from_bytes(os.urandom(5), "big") << 20  # MsgIds unlike any earlier run's
    out = []
    for i in range(first_index, first_index + count):
        plaintext = text_plaintext(
            creds, user=users[i % member_count], content=f"{CONTENT_PREFIX}{i}", msg_id=base + i
        )
        params, body = crypto.build_callback(
            plaintext, timestamp=timestamp, nonce=f"n{i}", agent_id=creds.agent_id
        )
        out.append(_request(f"{path}?{urlencode(params)}", body))
    return out


def save_requests(requests: Sequence[bytes], path: Path) -> None:
    path.write_bytes(pickle.dumps(list(requests), protocol=pickle.HIGHEST_PROTOCOL))


def load_requests(path: Path) -> list[bytes]:
    loaded = pickle.loads(path.read_bytes())
    assert isinstance(loaded, list)
    return loaded


def event_entries(creds: Credentials, count: int, member_count: int = 2000) -> Iterator[bytes]:
    """``data`` of events-stream entries, as the ingress stores them (for the responder)."""
    users = members(member_count)
    for i in range(count):
        plaintext = text_plaintext(
            creds, user=users[i % member_count], content=f"{CONTENT_PREFIX}{i}", msg_id=i + 1
        )
        parsed, raw = read_message(plaintext)
        yield encode_envelope(
            EventEnvelope(
                app="default",
                received_at=time.time(),
                trace_id=f"{i:016x}",
                dedup_key=f"msg:{i + 1}",
                event=cast("InboundEventType", parsed),
                raw=raw,
            )
        )


def outbox_entries(count: int, member_count: int = 2000, *, tag: str = "") -> Iterator[bytes]:
    """``data`` of outbox entries: one text to each member in turn (for the sender)."""
    users = members(member_count)
    now = time.time()
    for i in range(count):
        request = TextSend.to(users[i % member_count], f"{CONTENT_PREFIX}{i}")
        yield encode_outbox(
            outbox_entry(
                id=f"bench{tag}-{i}",
                app="default",
                trace_id=f"{i:016x}",
                created_at=now,
                request=request,
                origin="bench",
            )
        )
