"""Messages the other behaviours leave unanswered (image, voice, location…).

Acknowledged without a reply unless ``RESPONDER_OTHER_REPLY`` holds a text to answer with.
Events are never answered.
"""

from __future__ import annotations

from shared.bus import Context, Router
from shared.config import load_settings
from shared.schemas.inbound import Message
from shared.schemas.outbound import TextSend

router = Router("fallback")

# Read once at import: behaviours are loaded at start, with the rest of the configuration.
OTHER_REPLY = load_settings().responder_other_reply


@router.on(Message)
async def other_messages(msg: Message, ctx: Context) -> TextSend | None:
    """Other messages: RESPONDER_OTHER_REPLY if set, else no reply."""
    return TextSend.reply_to(msg, OTHER_REPLY) if OTHER_REPLY else None
