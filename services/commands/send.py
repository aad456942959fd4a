"""``wecom-bus send``: build a message/send body from the options and put it on the outbox.

The body goes through ``shared.bus.outbox.enqueue``, the same door as the send API. An image or
file is first uploaded through the sender's ``POST /v1/media``: only the sender holds the
access token, so this command never talks to WeCom itself.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.commands.base import fail, with_redis
from shared.bus.outbox import enqueue
from shared.config import load_settings, secret_value
from shared.errors import ConfigError, SchemaError

__all__ = ["body", "run"]


def body(args: argparse.Namespace, media_id: str | None) -> dict[str, Any]:
    """The message/send body the options describe (``--json`` fields win over the options)."""
    result: dict[str, Any] = {"app": args.app}
    for field, value in (("touser", args.to), ("toparty", args.party), ("totag", args.tag)):
        if value:
            result[field] = value
    if args.text is not None:
        result |= {"msgtype": "text", "text": {"content": args.text}}
    elif args.markdown is not None:
        result |= {"msgtype": "markdown", "markdown": {"content": args.markdown}}
    elif args.image or args.file:
        kind = "image" if args.image else "file"
        result |= {"msgtype": kind, kind: {"media_id": media_id}}
    elif args.json:
        loaded = json.loads(Path(args.json).read_text(encoding="utf-8"))
        result = {**loaded, **{k: v for k, v in result.items() if k not in loaded}}
    return result


class UploadError(Exception):
    pass


def upload(sender_url: str, app: str, path: Path, kind: str) -> str:
    """Upload ``path`` through the sender's media endpoint; returns WeCom's media_id.

    The API key is ``SENDER_API_KEY``, or the file ``SENDER_API_KEY_FILE`` names (a mounted
    secret), read the way the services read their secrets.
    """
    key = secret_value(os.environ, "SENDER_API_KEY")
    if not key:
        raise ConfigError("SENDER_API_KEY", "needed to upload media through the sender")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        response = httpx.post(
            f"{sender_url.rstrip('/')}/v1/media",
            params={"type": kind, "app": app},
            headers={"Authorization": f"Bearer {key}"},
            files={"media": (path.name, path.read_bytes(), content_type)},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        why = f"the sender at {sender_url} is unreachable ({type(exc).__name__})"
        raise UploadError(why) from None
    if response.status_code != 200:
        raise UploadError(f"upload failed ({response.status_code}): {response.text}")
    return str(response.json()["media_id"])


def run(args: argparse.Namespace) -> int:
    """Enqueue a message on the outbox and print its request id (the sender delivers it)."""
    settings = load_settings()
    url = settings.require_redis()
    media_id = None
    if args.image or args.file:
        path = Path(args.image or args.file)
        if not path.is_file():
            return fail("send", f"no such file: {path}", 2)
        try:
            media_id = upload(args.sender_url, args.app, path, "image" if args.image else "file")
        except UploadError as exc:
            return fail("send", str(exc))
    try:
        data = json.dumps(body(args, media_id), ensure_ascii=False).encode()
    except (OSError, ValueError) as exc:  # --json: unreadable, or not JSON
        return fail("send", f"--json {args.json}: {exc}", 2)

    async def put(redis: Redis) -> str:
        return await enqueue(redis, settings, data, origin="cli", idempotency_key=args.key)

    try:
        request_id = with_redis(url, put)
    except SchemaError as exc:
        return fail("send", f"{exc.field}: {exc.problem}", 2)
    except (RedisError, OSError) as exc:
        return fail("send", f"Redis unreachable ({type(exc).__name__})")
    print(request_id)
    return 0
