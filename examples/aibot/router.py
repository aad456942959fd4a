"""AI-bot echo: answers a bot's text messages by streaming them back, word by word.

The smallest behaviour that shows a streamed answer: each word is one write to the message's
stream, and WeCom shows the text so far on each of its refresh polls. Other bot messages get
a short answer (a stream that finishes at once); app events are not touched.
"""

from __future__ import annotations

import asyncio
import re

from shared.bus import Context, Router
from shared.schemas.aibot import BotMessage, BotText

router = Router("aibot-echo")

_MENTION = re.compile(r"^\s*@\S+\s*")  # group messages start with the "@bot" mention


def _delay(ctx: Context) -> float:
    """Seconds between words: AIBOT_ECHO_DELAY (default 0.3), so the growth is visible."""
    raw = ctx.state.environ.get("AIBOT_ECHO_DELAY", "0.3")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 0.3


@router.on(BotText)
async def echo(msg: BotText, ctx: Context) -> None:
    """Streams your words back to you."""
    words = _MENTION.sub("", msg.content).split()
    if not words:
        await ctx.bot_stream.say("(nothing to echo)")
        return
    for i, word in enumerate(words):
        if i:
            await asyncio.sleep(_delay(ctx))
        await ctx.bot_stream.append(word if i == 0 else " " + word)
    await ctx.bot_stream.finish()


@router.on(BotMessage)
async def other(msg: BotMessage, ctx: Context) -> None:
    """Other messages: a short answer."""
    await ctx.bot_stream.say(f"I can only echo text, not {msg.msgtype or 'this'}.")
