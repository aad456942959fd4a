"""The original app's behaviour: answer a text message by the reply rule.

Teams copy this file to add a behaviour: a router, a handler, a reply.
"""

from __future__ import annotations

from services.responder.rules import echo_reply
from shared.bus import Context, Router
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

router = Router("echo")


@router.on(TextMessage, description="发一句话，我回一句 / say something, I answer")
async def reply_rule(msg: TextMessage, ctx: Context) -> TextSend | None:
    """Any text: the same text without 吗, with ?→! and ？→！."""
    reply = echo_reply(msg.content)
    return TextSend.reply_to(msg, reply) if reply is not None else None
