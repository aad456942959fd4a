"""Active replies through an AI bot's ``response_url`` (主动回复, path/101138), at most once.

WeCom accepts one call per ``response_url``, for one hour, with plain JSON (no token, no
encryption). ``respond`` posts a body built by ``shared.protocol.aibot_reply``
(``markdown_response``, ``template_card_response``) to a URL checked to be WeCom's own, and
marks the URL used in Redis first, so a repeated call (a redelivered event, two workers)
never posts twice: it gets the first call's answer back instead. If the connection could not
even be opened the mark is removed (nothing reached WeCom, so trying again is safe); any other
failure keeps it (WeCom may have used the URL).
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import httpx
import msgspec
from redis.asyncio import Redis

from shared.bus import names
from shared.protocol.aibot_reply import check_response_url

__all__ = ["RESPONSE_TTL", "ResponseUnsent", "respond"]

RESPONSE_TTL = 3600  # "有效期为1小时" (path/101138)
_PENDING = b"pending"


class ResponseUnsent(Exception):
    """Nothing reached WeCom (the connection failed): the same call may be tried again."""


async def respond(
    client: httpx.AsyncClient,
    redis: Redis,
    *,
    url: str,
    body: bytes,
    api_base: str,
    prefix: str = names.DEFAULT_PREFIX,
) -> dict[str, Any]:
    """POST ``body`` to ``url`` once; WeCom's JSON answer (``errcode`` 0 = accepted).

    A URL already used answers ``{"duplicate": True, "first": <first answer or None>}``.
    """
    check_response_url(url, api_base)
    key = names.bot_response(prefix, hashlib.sha256(url.encode()).hexdigest()[:40])
    if not await redis.set(key, _PENDING, nx=True, ex=RESPONSE_TTL):
        first = cast("bytes | None", await redis.get(key))
        return {"duplicate": True, "first": None if first in (None, _PENDING) else _json(first)}
    try:
        response = await client.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=5.0
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        await redis.delete(key)
        raise ResponseUnsent(type(exc).__name__) from None
    answer = _json(response.content) if response.status_code == 200 else {}
    answer = answer or {"errcode": -1, "errmsg": f"HTTP {response.status_code}"}
    await redis.set(key, msgspec.json.encode(answer), xx=True, keepttl=True)
    return answer


def _json(data: bytes | None) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data or b"")
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
