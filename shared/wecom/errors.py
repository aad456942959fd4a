"""WeCom API failures, translated in one place: errcodes, HTTP statuses and transport errors.

Our exception hierarchy (under ``shared.errors.WeComBusError``)::

    WeComAPIError            WeCom answered errcode != 0; carries errcode, errmsg, action, advice
    ├── TokenInvalidError    40014 invalid, 42001 expired, 41001 missing   "refresh_token"
    ├── RateLimitedError     45009, 45033            action "backoff"
    ├── RetryableAPIError    -1, 6000                action "backoff"
    └── PermanentAPIError    every other errcode     action "permanent"
    WeComUnavailableError    no WeCom answer: timeout, connection error, 5xx, not JSON
                             action "backoff"

``action``: refresh the token and retry once, back off and retry, or give up. 41001 means the
request carried no access_token at all (a bug on our side, not an expired token); it is handled
like the token errors (one fresh token, one retry) but its advice says so. Errcodes that refuse an
app as a whole (45009, and configuration errors such as 60020 or 40001) open that app's send
circuit (``shared.wecom.circuit``) instead of failing messages one by one. ``advice`` is one
sentence an operator can act on. ``retry_after`` is a first delay (seconds) for "backoff" errors,
else None. Messages never contain an access_token or a secret: httpx's messages can carry the
request URL, so they are scrubbed, and the original exception is not chained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import httpx
import msgspec

from shared.errors import WeComBusError

__all__ = [
    "Action",
    "PermanentAPIError",
    "RateLimitedError",
    "RetryableAPIError",
    "TokenInvalidError",
    "WeComAPIError",
    "WeComUnavailableError",
    "classify",
    "map_transport_errors",
    "payload_from",
    "payload_from_response",
    "raise_for_errcode",
    "scrub",
    "unavailable",
]

Action = Literal["refresh_token", "backoff", "permanent"]

_SECRET_PARAM = re.compile(r"(access_token|corpsecret|secret)=[^&\s'\"]*", re.IGNORECASE)
_FROM_IP = re.compile(r"from ip:\s*([0-9A-Fa-f.:]+[0-9A-Fa-f])")
_decode_payload = msgspec.json.Decoder(dict[str, Any]).decode


def scrub(text: str) -> str:
    """Mask ``access_token=…``, ``corpsecret=…`` and ``secret=…`` wherever they appear."""
    return _SECRET_PARAM.sub(r"\1=***", text)


_ADVICE: dict[int, str] = {
    -1: "WeCom is busy; retry later, at most a few times.",
    6000: "WeCom reported a data version conflict; retry a little later.",
    40001: "The app Secret is wrong: copy it again from 应用管理 → the app → Secret into "
    "WECOM_SECRET (each app has its own Secret).",
    40003: "A UserID in touser does not exist in this corp; check it in 通讯录 "
    "(the member's 账号).",
    40007: "The media_id is invalid or expired (temporary media lives 3 days); upload the file "
    "again and send the new media_id.",
    40008: "WeCom does not know this msgtype; check the request's msgtype.",
    40013: "The CorpID is wrong: set WECOM_CORP_ID to 我的企业 → 企业信息 → 企业ID.",
    40014: "WeCom rejected the access_token; a fresh one is fetched and the call retried once. "
    "If it persists, check whether someone reset the app's Secret.",
    40031: "The touser list is malformed; UserIDs are joined by '|'.",
    40032: "Too many recipients (touser ≤ 1000, toparty/totag ≤ 100); split the send.",
    40035: "A parameter is invalid; check the request against WeCom's API documentation.",
    40056: "The agentid is not this app's: check WECOM_AGENT_ID (应用管理 → the app → AgentId) "
    "and the request's agentid.",
    50003: "The app is disabled (应用已停用): enable it again in 应用管理 → the app.",
    40058: "A required parameter is empty or invalid; check the request body.",
    40063: "A parameter is empty; check the request body.",
    41001: "The request carried no access_token at all (missing, not expired): a bug in the "
    "caller, please report it; a fresh token was fetched and the call retried once.",
    41011: "The request has no agentid; set it or let wecom-bus fill in the app's.",
    41016: "The message lacks a title; news and textcard messages need one.",
    41033: "The message lacks a description; textcard messages need one.",
    42001: "The access_token expired; a fresh one is fetched and the call retried once. "
    "If it persists, check whether someone reset the app's Secret.",
    44004: "The text content is empty; WeCom refuses empty messages, so do not send blank ones.",
    45002: "The message is too large (text and markdown ≤ 2048 bytes); shorten or split it.",
    45008: "A news message may carry at most 8 articles.",
    45009: "WeCom's API rate limit was hit; wait at least a minute (the block may last an hour "
    "or a day) and lower the send rate.",
    45033: "Too many concurrent calls to this API; lower the sender's concurrency.",
    48002: "The app has no permission for this API: grant it in 应用管理 → the app → API权限, "
    "or call it with an app that has it.",
    60011: "The app may not reach these members, departments or tags: widen the app's "
    "可见范围 (visible range).",
    81013: "Every UserID, department and tag in the request is invalid or outside the app's "
    "可见范围 (visible range); check the recipients and the visible range.",
    82001: "All recipients (touser/toparty/totag) are empty or invalid, or outside the app's "
    "可见范围 (visible range); check the recipients.",
    301002: "The app has no permission on this resource (e.g. another app's message or "
    "agentid); use the app that owns it.",
}

_RETRY_AFTER: dict[int, float] = {-1: 1.0, 6000: 1.0, 45009: 60.0, 45033: 1.0}


def _advice(errcode: int, errmsg: str) -> str:
    if errcode == 60020:
        match = _FROM_IP.search(errmsg)
        where = match.group(1) if match else "this server's egress IP"
        return (
            f"WeCom does not trust the calling IP: add {where} to 应用管理 → the app → "
            "应用详情 → 企业可信IP (it takes effect after about a minute)."
        )
    if errcode in _ADVICE:
        return _ADVICE[errcode]
    return (
        f"WeCom refused the request; look errcode {errcode} up at "
        f"https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )


class WeComAPIError(WeComBusError):
    """WeCom answered with ``errcode != 0``; the subclass says what to do about it."""

    action: ClassVar[Action] = "permanent"

    def __init__(self, errcode: int, errmsg: str = "", *, endpoint: str = "") -> None:
        self.errcode = errcode
        self.errmsg = scrub(errmsg)
        self.endpoint = endpoint
        self.advice = _advice(errcode, self.errmsg)
        self.retry_after: float | None = (
            _RETRY_AFTER.get(errcode, 1.0) if self.action == "backoff" else None
        )
        where = f" from {endpoint}" if endpoint else ""
        super().__init__(f"errcode {errcode}{where}: {self.errmsg or '-'}. {self.advice}")


class TokenInvalidError(WeComAPIError):
    """The access_token was refused (T): invalidate exactly that token, refetch, retry once."""

    action = "refresh_token"


class RateLimitedError(WeComAPIError):
    action = "backoff"


class RetryableAPIError(WeComAPIError):
    action = "backoff"


class PermanentAPIError(WeComAPIError):
    """Retrying will not help: the configuration or the request must change."""

    action = "permanent"


class WeComUnavailableError(WeComBusError):
    """No usable answer from WeCom (timeout, connection error, 5xx, garbage): back off, retry."""

    action: ClassVar[Action] = "backoff"

    def __init__(self, endpoint: str, reason: str, *, status_code: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = scrub(reason)
        self.status_code = status_code
        self.retry_after = 1.0
        self.advice = (
            "WeCom could not be reached or answered badly; the call is retried with backoff. "
            "If it persists, check egress/DNS to qyapi.weixin.qq.com and WECOM_API_BASE."
        )
        super().__init__(f"WeCom unavailable ({endpoint}): {self.reason}")


_TOKEN_CODES = frozenset({40014, 42001, 41001})
_RATE_CODES = frozenset({45009, 45033})
_RETRY_CODES = frozenset({-1, 6000})


def classify(errcode: int) -> type[WeComAPIError]:
    """The error class for a non-zero errcode (see the table at the top of this module)."""
    if errcode in _TOKEN_CODES:
        return TokenInvalidError
    if errcode in _RATE_CODES:
        return RateLimitedError
    if errcode in _RETRY_CODES:
        return RetryableAPIError
    return PermanentAPIError


def raise_for_errcode(payload: Mapping[str, Any], *, endpoint: str = "") -> None:
    """Raise the matching WeComAPIError unless ``errcode`` is absent or 0 (never judge errmsg)."""
    raw = payload.get("errcode", 0)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise WeComUnavailableError(endpoint, f"answered with a malformed errcode {raw!r}")
    try:
        errcode = int(raw)
    except ValueError:
        raise WeComUnavailableError(endpoint, "answered with a non-numeric errcode") from None
    if errcode == 0:
        return
    errmsg = payload.get("errmsg")
    raise classify(errcode)(errcode, errmsg if isinstance(errmsg, str) else "", endpoint=endpoint)


def payload_from_response(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    """WeCom's JSON answer as a dict, or the error it stands for.

    WeCom answers every API call with HTTP 200 and a JSON object; anything else (5xx, a proxy's
    403 or 429, an HTML error page) is not an answer from WeCom and becomes
    WeComUnavailableError, so the sender backs off and, past its delivery limit, dead-letters.
    """
    return payload_from(response.status_code, response.content, endpoint)


def payload_from(status: int, content: bytes, endpoint: str) -> dict[str, Any]:
    """:func:`payload_from_response` of an answer's HTTP status and body."""
    if status != 200:
        raise WeComUnavailableError(endpoint, f"HTTP {status}", status_code=status)
    try:
        payload = _decode_payload(content)
    except msgspec.DecodeError:
        raise WeComUnavailableError(
            endpoint, "answered with something that is not a JSON object", status_code=status
        ) from None
    raise_for_errcode(payload, endpoint=endpoint)
    return payload


def unavailable(endpoint: str, exc: BaseException, *, timed_out: bool) -> WeComUnavailableError:
    """The error a call that got no answer raises, whichever HTTP client made it: "timed out
    (<type>)", or "<type>: <detail>" with any token or secret in the detail masked."""
    if timed_out:
        return WeComUnavailableError(endpoint, f"timed out ({type(exc).__name__})")
    return WeComUnavailableError(
        endpoint, f"{type(exc).__name__}: {scrub(str(exc)) or 'no detail'}"
    )


@contextmanager
def map_transport_errors(endpoint: str) -> Iterator[None]:
    """Turn httpx's request errors into WeComUnavailableError (without the URL's token)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise unavailable(endpoint, exc, timed_out=True) from None
    except httpx.RequestError as exc:
        raise unavailable(endpoint, exc, timed_out=False) from None
