"""Test helpers: settings for a test app, WeCom-shaped callbacks built with our own crypto, and
``eventually`` (poll a condition)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import struct
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from Crypto.Cipher import AES

from shared.config import Settings, load_settings
from shared.protocol.crypto import CallbackCrypto

CORP_ID = "wwtestcorp0001"
AGENT_ID = 1000002
TOKEN = "TestToken123"
AES_KEY = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
SECRET = "test-corp-secret-9f8e7d"


def settings(redis_url: str, **env: str) -> Settings:
    return load_settings(
        {
            "REDIS_URL": redis_url,
            "WECOM_CORP_ID": CORP_ID,
            "WECOM_AGENT_ID": str(AGENT_ID),
            "WECOM_SECRET": SECRET,
            "WECOM_TOKEN": TOKEN,
            "WECOM_ENCODING_AES_KEY": AES_KEY,
            **env,
        }
    )


def crypto(corp_id: str = CORP_ID) -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, corp_id)


def text_xml(
    content: str = "你好吗?",
    *,
    from_user: str = "alice",
    msg_id: int = 1234567890123456789,
    agent_id: int = AGENT_ID,
    create_time: int | None = None,
) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id}</MsgId><AgentID>{agent_id}</AgentID></xml>"
    ).encode()


def event_xml(
    event: str, *, from_user: str = "alice", extra: str = "", create_time: int = 0
) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
        f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{extra}"
        f"<AgentID>{AGENT_ID}</AgentID></xml>"
    ).encode()


def post_callback(
    plaintext: bytes, *, nonce: str = "nonce123", timestamp: str | None = None
) -> tuple[str, bytes]:
    """The query string and body WeCom would POST for this plaintext."""
    params, body = crypto().build_callback(
        plaintext, timestamp=timestamp or str(int(time.time())), nonce=nonce, agent_id=AGENT_ID
    )
    return urlencode(params), body


def raw_encrypt(frame: bytes) -> str:
    """AES-CBC over bytes we framed ourselves (for padding and length-field attacks)."""
    key = base64.b64decode(AES_KEY + "=")
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(frame)).decode()


def framed(msg: bytes, receive_id: bytes = CORP_ID.encode(), *, length: int | None = None) -> bytes:
    """random(16) + length + msg + receive-id, unpadded."""
    n = len(msg) if length is None else length
    return b"0123456789abcdef" + struct.pack(">I", n) + msg + receive_id


def pkcs7_32(data: bytes) -> bytes:
    pad = 32 - len(data) % 32
    return data + bytes([pad]) * pad


def signed_envelope(
    encrypt: str, *, timestamp: str | None = None, nonce: str = "n1"
) -> tuple[str, bytes]:
    ts = timestamp or str(int(time.time()))
    signature = crypto().signature(ts, nonce, encrypt)
    body = (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>"
    ).encode()
    return urlencode({"msg_signature": signature, "timestamp": ts, "nonce": nonce}), body


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` (plain or async) until it holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            found = check()
            if await found if inspect.isawaitable(found) else found:
                return
            await asyncio.sleep(0.01)
