"""Operator commands: ``send``, ``deadletter list|replay|drop`` and ``check``."""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.bus import names
from shared.bus.outbox import enqueue
from shared.config import load_settings
from shared.errors import ConfigError, SchemaError

__all__ = ["check", "deadletter", "send"]


def _body(args: argparse.Namespace, media_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"app": args.app}
    for field, value in (("touser", args.to), ("toparty", args.party), ("totag", args.tag)):
        if value:
            body[field] = value
    if args.text is not None:
        body |= {"msgtype": "text", "text": {"content": args.text}}
    elif args.markdown is not None:
        body |= {"msgtype": "markdown", "markdown": {"content": args.markdown}}
    elif args.image or args.file:
        kind = "image" if args.image else "file"
        body |= {"msgtype": kind, kind: {"media_id": media_id}}
    elif args.json:
        loaded = json.loads(Path(args.json).read_text(encoding="utf-8"))
        body = {**loaded, **{k: v for k, v in body.items() if k not in loaded}}
    return body


def _upload(args: argparse.Namespace, path: Path, kind: str) -> str:
    """Media go through the sender (it alone holds the access token)."""
    key = os.environ.get("SENDER_API_KEY")
    if not key:
        raise ConfigError("SENDER_API_KEY", "needed to upload media through the sender")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = httpx.post(
        f"{args.sender_url.rstrip('/')}/v1/media",
        params={"type": kind, "app": args.app},
        headers={"Authorization": f"Bearer {key}"},
        files={"media": (path.name, path.read_bytes(), content_type)},
        timeout=60,
    )
    if response.status_code != 200:
        raise SystemExit(f"wecom-bus send: upload failed ({response.status_code}): {response.text}")
    return str(response.json()["media_id"])


def send(args: argparse.Namespace) -> int:
    """Enqueue a message on the outbox (the sender delivers it)."""
    settings = load_settings()
    url = settings.require_redis()
    media_id = None
    if args.image or args.file:
        path = Path(args.image or args.file)
        if not path.is_file():
            print(f"wecom-bus send: no such file: {path}", file=sys.stderr)
            return 2
        media_id = _upload(args, path, "image" if args.image else "file")
    body = json.dumps(_body(args, media_id), ensure_ascii=False).encode()

    async def main() -> str:
        redis = Redis.from_url(url)
        try:
            return await enqueue(redis, settings, body, origin="cli", idempotency_key=args.key)
        finally:
            await redis.aclose()

    try:
        request_id = asyncio.run(main())
    except SchemaError as exc:
        print(f"wecom-bus send: {exc.field}: {exc.problem}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"wecom-bus send: Redis unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(request_id)
    return 0


async def _deadletter(args: argparse.Namespace) -> int:
    settings = load_settings()
    redis = Redis.from_url(settings.require_redis())
    stream = names.deadletter(settings.prefix)
    try:
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await redis.xrange(stream, count=args.limit if args.action == "list" else None),
        )
        if args.action == "list":
            for entry_id, fields in entries:
                f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(f.get("time", 0))))
                print(
                    f"{entry_id.decode()}  {stamp}  {f.get('stream')}/{f.get('group')} "
                    f"{f.get('id')}  attempts={f.get('attempts')}  {f.get('error')}"
                )
            print(f"{await redis.xlen(stream)} dead letter(s)", file=sys.stderr)
            return 0
        wanted = set(args.ids)
        chosen = [(i, f) for i, f in entries if args.all or i.decode() in wanted]
        if not chosen:
            print("wecom-bus deadletter: nothing matched", file=sys.stderr)
            return 1
        for entry_id, fields in chosen:
            if args.action == "replay":
                how = await _replay(redis, fields)
                print(f"{entry_id.decode()} replayed ({how})")
            await redis.xdel(stream, entry_id)
            if args.action == "drop":
                print(f"{entry_id.decode()} dropped")
        return 0
    finally:
        await redis.aclose()


async def _replay(redis: Redis, fields: dict[bytes, bytes]) -> str:
    """Give the entry back to the group that failed it, with the same entry id if possible.

    XCLAIM ... FORCE makes the original entry pending again for that group alone, so other
    groups do not see it twice and the deterministic request ids stay the same. If the stream
    was trimmed since, the payload is added again as a new entry (every group sees it).
    """
    stream, group = fields[b"stream"].decode(), fields[b"group"].decode()
    entry_id = fields[b"id"].decode()
    try:
        claimed = await redis.xclaim(
            stream,
            group,
            "deadletter-replay",
            min_idle_time=0,
            message_ids=[entry_id],
            idle=86_400_000,  # long idle: the next claim round of any replica takes it
            retrycount=0,
            force=True,
            justid=True,
        )
    except ResponseError:
        claimed = []
    if claimed:
        return f"pending again for group {group}"
    await redis.xadd(stream, {"data": fields[b"data"]})
    return f"re-added to {stream} (the original was trimmed)"


def deadletter(args: argparse.Namespace) -> int:
    if args.action != "list" and not (args.all or args.ids):
        print("wecom-bus deadletter: name entry ids or --all", file=sys.stderr)
        return 2
    return asyncio.run(_deadletter(args))


class _NoTokens:
    """``check`` calls gettoken itself and nothing else: it neither reads nor caches a token."""

    async def get(self) -> str:
        raise RuntimeError("check makes no authenticated call")

    async def invalidate(self, failed: str) -> None:
        return None


def check(args: argparse.Namespace) -> int:
    """Validate configuration, reach Redis and WeCom; say what is wrong in one line each."""
    from shared.wecom.client import WeComClient
    from shared.wecom.errors import WeComAPIError, WeComUnavailableError

    settings = load_settings()
    problems = 0
    print(f"configuration: ok ({len(settings.apps)} app(s): {', '.join(settings.apps) or '-'})")

    async def main() -> int:
        failures = 0
        try:
            redis = Redis.from_url(settings.require_redis(), socket_connect_timeout=3)
            await redis.ping()
            await redis.aclose()
            print("redis: ok")
        except (RedisError, OSError) as exc:
            print(f"redis: unreachable ({type(exc).__name__})")
            failures += 1
        except ConfigError as exc:
            print(f"redis: {exc}")
            failures += 1
        for name, app in settings.apps.items():
            if app.secret is None:
                print(f"wecom[{name}]: no secret configured (ingress-only), gettoken skipped")
                continue
            async with WeComClient(
                app, token_source=_NoTokens(), base_url=settings.api_base
            ) as client:
                try:
                    _, expires_in = await client.gettoken()
                    print(f"wecom[{name}]: gettoken ok (expires_in={expires_in})")
                except WeComAPIError as exc:
                    print(f"wecom[{name}]: errcode {exc.errcode}: {exc.advice}")
                    failures += 1
                except WeComUnavailableError as exc:
                    print(f"wecom[{name}]: unreachable: {exc}")
                    failures += 1
        return failures

    problems += asyncio.run(main())
    return 1 if problems else 0
