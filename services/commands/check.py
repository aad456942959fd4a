"""``wecom-bus check [--redis]``: say, one line per item, what would stop wecom-bus working.

Without ``--redis``: the configuration loads, Redis answers, and for each app with a Secret
WeCom hands out a token (gettoken) and recognises the app (agent/get), so a wrong Secret, a
wrong AgentId, a disabled app or an untrusted server IP (60020, with the IP WeCom saw) shows
before the first send fails; and each app's send circuit as the sender left it in Redis (an
open circuit, sends paused after WeCom refused the app, is an error). The token fetched here
is used for agent/get and then forgotten: the check never touches the token the sender caches.

With ``--redis``, also the Redis server in depth (``redis_check``): what the delivery promises
need of it.

The exit code is 0 only when no line is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.commands import redis_check
from services.commands.base import Finding
from shared.config import AppSettings, Settings, load_settings
from shared.errors import ConfigError
from shared.wecom import circuit
from shared.wecom.client import WeComClient
from shared.wecom.errors import WeComAPIError, WeComUnavailableError

__all__ = ["app_findings", "circuit_finding", "run"]

_WRONG_AGENT = frozenset({40056, 301002})


class _FetchedToken:
    """A token source holding the one token this check fetched; nothing is cached in Redis."""

    token = ""

    async def get(self) -> str:
        return self.token

    async def invalidate(self, failed: str) -> None:
        return None


def _agent_finding(app: AppSettings, answer: dict[str, Any]) -> Finding:
    item = f"wecom[{app.name}] agent/get"
    name = answer.get("name") or "?"
    if int(answer.get("close") or 0):
        why = "is disabled (close=1): enable it in 应用管理 → the app, or sends will fail"
        return Finding(item, "error", f"app {name!r} (AgentId {app.agent_id}) {why}")
    members = len((answer.get("allow_userinfos") or {}).get("user") or [])
    parties = len((answer.get("allow_partys") or {}).get("partyid") or [])
    text = f"app {name!r}, AgentId {app.agent_id}, enabled"
    if members or parties:
        return Finding(item, "ok", f"{text}, visible to {members} member(s), {parties} dept(s)")
    # An empty visible range: every send would be refused with 81013.
    return Finding(item, "warning", f"{text}, but its 可见范围 (visible range) is empty")


def _refusal(app: AppSettings, call: str, exc: WeComAPIError) -> Finding:
    item = f"wecom[{app.name}] {call}"
    if call == "agent/get" and exc.errcode in _WRONG_AGENT:
        variable = app.variable("agent_id")
        return Finding(
            item,
            "error",
            f"errcode {exc.errcode}: {variable}={app.agent_id} is not the AgentId of the app "
            "whose Secret is configured; copy it from 应用管理 → the app → AgentId",
        )
    return Finding(item, "error", f"errcode {exc.errcode}: {exc.advice}")


async def app_findings(
    app: AppSettings, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[Finding]:
    """gettoken, then agent/get for one app; ``transport`` lets tests use an in-process fake."""
    if app.secret is None:
        return [Finding(f"wecom[{app.name}]", "ok", "no Secret (ingress only), WeCom not called")]
    found: list[Finding] = []
    call, tokens = "gettoken", _FetchedToken()
    async with WeComClient(
        app, token_source=tokens, base_url=base_url, transport=transport
    ) as client:
        try:
            tokens.token, expires_in = await client.gettoken()
            found.append(Finding(f"wecom[{app.name}] gettoken", "ok", f"expires_in={expires_in}"))
            call = "agent/get"
            found.append(_agent_finding(app, await client.agent()))
        except WeComAPIError as exc:
            found.append(_refusal(app, call, exc))
        except WeComUnavailableError as exc:
            found.append(Finding(f"wecom[{app.name}] {call}", "error", f"unreachable: {exc}"))
    return found


def circuit_finding(state: circuit.CircuitState, *, now: float | None = None) -> Finding:
    """One app's circuit: closed is ok; open (sends paused) an error; probing a warning (the
    pause is over and the next send tests whether WeCom accepts the app again)."""
    item = f"wecom[{state.app}] circuit"
    if state.state == "closed":
        return Finding(item, "ok", "closed")
    why = "rate limited" if state.reason == "rate_limited" else "configuration refused"
    cause = f"{why}, errcode {state.errcode}: {state.advice or 'no advice recorded'}"
    if state.state == "probing":
        return Finding(item, "warning", f"probing: the next send tests the app again ({cause})")
    until = state.until or 0.0
    left = max(until - (time.time() if now is None else now), 0.0)
    when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Finding(item, "error", f"open: sends paused until {when} (in {left:.0f} s); {cause}")


async def _circuits(redis: Redis, settings: Settings) -> list[Finding]:
    return [
        circuit_finding(await circuit.read(redis, settings.prefix, name)) for name in settings.apps
    ]


async def _redis(settings: Settings, deep: bool) -> list[Finding]:
    try:
        url = settings.require_redis()
    except ConfigError as exc:
        return [Finding("redis", "error", str(exc))]
    redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        await redis.ping()
        found = [Finding("redis", "ok", "")]
        if deep:
            found = await redis_check.findings(redis, settings.prefix)
        return found + await _circuits(redis, settings)
    except (RedisError, OSError) as exc:
        return [Finding("redis", "error", f"unreachable ({type(exc).__name__})")]
    finally:
        await redis.aclose()


async def _all(settings: Settings, deep: bool) -> list[Finding]:
    found = await _redis(settings, deep)
    for app in settings.apps.values():
        found += await app_findings(app, settings.api_base)
    return found


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    apps = ", ".join(settings.apps) or "-"
    findings = [Finding("configuration", "ok", f"{len(settings.apps)} app(s): {apps}")]
    findings += asyncio.run(_all(settings, args.redis))
    for finding in findings:
        print(finding.line())
    return 1 if any(f.level == "error" for f in findings) else 0
