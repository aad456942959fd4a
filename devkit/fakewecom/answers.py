"""WeCom's JSON answers: the errcode texts and the shape of ``errmsg``.

WeCom answers HTTP 200 whatever the errcode, with an errmsg like ``invalid access_token, hint:
[1718000000_12_ab…], from ip: 1.2.3.4, more info at https://open.work.weixin.qq.com/devtool/
query?e=40014``. Clients must judge by errcode, never errmsg, but operators read
errmsg, and ``wecom-bus check`` pulls the IP out of a 60020.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
from starlette.responses import JSONResponse

__all__ = ["TEXTS", "client_ip", "error_body", "ok"]

TEXTS: dict[int, str] = {
    -1: "system busy",
    40001: "invalid credential",
    40004: "invalid media type",
    40005: "invalid file type",
    40006: "invalid file size",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40032: "invalid userid list size",
    40029: "invalid code",
    40035: "invalid parameter",
    40056: "invalid agentid",
    40068: "invalid tagid",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41009: "missing userid",
    41011: "agentid missing",
    41016: "title missing",
    41033: "description missing",
    42001: "access_token expired",
    44001: "empty media data",
    44004: "empty content",
    45001: "media size out of limit",
    45002: "content size out of limit",
    45008: "article size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    48001: "api unauthorized",
    60020: "not allow to access from your ip",
    60111: "userid not found",
    60123: "invalid party id",
    81013: "user & party & tag all invalid",
    82001: "All touser & toparty & totag invalid",
    301002: "no privilege to access/modify contact/party/agent",
}


def client_ip(scope_client: tuple[str, int] | None) -> str:
    return scope_client[0] if scope_client else "unknown"


def error_body(code: int, ip: str, detail: str | None = None) -> dict[str, Any]:
    """``{"errcode", "errmsg"}`` as WeCom writes it; ``detail`` names what was wrong."""
    text = TEXTS.get(code, "fault injected")
    if detail:
        text = f"{text}: {detail}"
    hint = f"{int(time.time())}_{secrets.randbelow(100)}_{secrets.token_hex(16)}"
    errmsg = (
        f"{text}, hint: [{hint}], from ip: {ip}, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={code}"
    )
    return {"errcode": code, "errmsg": errmsg}


class _Json(JSONResponse):
    """JSONResponse encoded by msgspec (the same compact UTF-8 JSON, a fraction of the CPU)."""

    def render(self, content: Any) -> bytes:
        return _encode(content)


_encode = msgspec.json.Encoder().encode


def ok(**fields: Any) -> JSONResponse:
    return _Json({"errcode": 0, "errmsg": "ok", **fields})
