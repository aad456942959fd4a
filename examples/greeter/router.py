"""The greeter: a behaviour that reads WeCom through the sender's gateway (``ctx.wecom``).

A text gets a greeting with the member's name (user/get) and main department
(department/get); an image gets its size, type and SHA-256, from the file itself
(media/get). Run it as its own group::

    SENDER_URL=http://sender:8082 SENDER_API_KEY=… \\
        wecom-bus responder --group greeter --handlers examples.greeter.router:router

The sender must allow the three APIs (the default ``SENDER_GATEWAY_APIS`` does).
"""

from __future__ import annotations

import hashlib

from shared.bus import Context, Router
from shared.schemas.inbound import ImageMessage, TextMessage
from shared.schemas.outbound import TextSend
from shared.wecom.errors import WeComAPIError

router = Router("greeter")

EXPIRED = 40007  # media ids of received files live 3 days


@router.on(TextMessage)
async def greet(msg: TextMessage, ctx: Context) -> TextSend:
    """Says hello with your name and department."""
    user = await ctx.wecom.get("user/get", userid=msg.from_user)
    where = ""
    if (main := user.get("main_department")) is not None:
        found = await ctx.wecom.get("department/get", id=main)
        where = f" ({found['department']['name']})"
    return TextSend.reply_to(msg, f"你好, {user['name']}{where}! Hello, {user['name']}{where}!")


@router.on(ImageMessage)
async def describe(msg: ImageMessage, ctx: Context) -> TextSend:
    """Tells the size, type and SHA-256 of the image you send."""
    try:
        media = await ctx.wecom.download(msg.media_id)
    except WeComAPIError as exc:
        if exc.errcode != EXPIRED:
            raise
        return TextSend.reply_to(msg, "That image is older than 3 days; WeCom no longer has it.")
    digest = hashlib.sha256(media.content).hexdigest()
    return TextSend.reply_to(
        msg,
        f"{media.filename}: {len(media.content)} bytes, {media.content_type}, sha256 {digest}",
    )
