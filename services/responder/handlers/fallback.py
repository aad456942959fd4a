"""Messages the other behaviours leave unanswered (image, voice, location…).

Acknowledged without a reply unless ``RESPONDER_OTHER_REPLY`` holds a text to answer with; it is
read from the service's settings (``ctx.state``), not at import. Events are never answered.
"""

from __future__ import annotations

from shared.bus import Context, Router
from shared.schemas.inbound import Message
from shared.schemas.outbound import TextSend

router = Router("fallback")


# Not listed by /help: it answers what members did not ask for.
@router.on(Message, description="")
async def other_messages(msg: Message, ctx: Context) -> TextSend | None:
    """Other messages: RESPONDER_OTHER_REPLY if set, else no reply."""
    reply = ctx.state.settings.responder_other_reply
    return TextSend.reply_to(msg, reply) if reply else None
