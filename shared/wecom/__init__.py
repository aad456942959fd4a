"""The WeCom API side: WeComClient (qyapi over httpx), TokenCache (Redis) and their errors."""

from __future__ import annotations

from shared.wecom.client import (
    AppCredentials,
    MediaKind,
    SendResult,
    TokenFetcher,
    TokenSource,
    WeComClient,
)
from shared.wecom.errors import (
    PermanentAPIError,
    RateLimitedError,
    RetryableAPIError,
    TokenInvalidError,
    WeComAPIError,
    WeComUnavailableError,
    classify,
    raise_for_errcode,
)
from shared.wecom.token import TokenCache

__all__ = [
    "AppCredentials",
    "MediaKind",
    "PermanentAPIError",
    "RateLimitedError",
    "RetryableAPIError",
    "SendResult",
    "TokenCache",
    "TokenFetcher",
    "TokenInvalidError",
    "TokenSource",
    "WeComAPIError",
    "WeComClient",
    "WeComUnavailableError",
    "classify",
    "raise_for_errcode",
]
