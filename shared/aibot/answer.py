"""The answer a behaviour streams to an AI-bot message: ``ctx.bot_stream`` in a handler.

::

    @router.on(BotText)
    async def ask(msg: BotText, ctx: Context) -> None:
        async for token in model.stream(msg.content):
            await ctx.bot_stream.append(token)      # the member sees it on WeCom's next poll
        await ctx.bot_stream.finish()

    @router.on(BotText, when=...)
    async def short(msg: BotText, ctx: Context) -> None:
        await ctx.bot_stream.say("Done.")          # a stream that finishes at once

Writes go to Redis at once (that is the point of streaming), not with the event's ack. Each
write is numbered 1, 2, 3 … per event, shared by every handler of that event, so when an
event is delivered again (a crash, a ``Retry``) the writes the first run already made are
ignored and the text is not repeated. A run that produces different text the second time
(a sampled model) continues after what was already shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from shared.schemas.aibot import BotEnvelope, decode_bot_envelope

if TYPE_CHECKING:
    from shared.aibot.streams import AppendResult

__all__ = ["BotAnswer", "is_bot_entry", "read_bot_entry"]


class BotAnswer:
    """The stream one bot message is answered on; shared by the handlers of that event."""

    def __init__(self, redis: Callable[[], Redis], prefix: str, bot: str, stream_id: str) -> None:
        self._redis = redis  # resolved on first write: a State without Redis fails only then
        self.prefix = prefix
        self.bot = bot
        self.stream_id = stream_id
        self._seq = 0

    def __repr__(self) -> str:
        return f"BotAnswer(bot={self.bot!r}, stream_id={self.stream_id!r}, writes={self._seq})"

    async def _write(self, text: str, finish: bool) -> AppendResult:
        # Imported here: shared.bus's router imports this module, and streams imports shared.bus.
        from shared.aibot.streams import BotStreams

        self._seq += 1
        streams = BotStreams(self._redis(), self.prefix)
        return await streams.append(self.bot, self.stream_id, self._seq, text, finish=finish)

    async def append(self, text: str) -> AppendResult:
        """Add ``text`` to what the member sees ("ok", or why not: finished, missing …)."""
        return await self._write(text, False)

    async def finish(self, text: str = "") -> AppendResult:
        """Add the last ``text`` (may be empty) and end the stream: WeCom stops polling."""
        return await self._write(text, True)

    async def say(self, text: str) -> AppendResult:
        """A whole, short answer: ``text`` and the end at once."""
        return await self.finish(text)


def is_bot_entry(app: str) -> bool:
    """Bot entries of the events stream carry ``bot:<name>`` where app entries name an app."""
    return app.startswith("bot:")


def read_bot_entry(
    data: bytes, redis: Callable[[], Redis], prefix: str
) -> tuple[BotEnvelope, BotAnswer | None]:
    """A bot entry and, for a message, the answer its handlers write to."""
    envelope = decode_bot_envelope(data)
    if not envelope.stream_id:
        return envelope, None
    return envelope, BotAnswer(redis, prefix, envelope.bot, envelope.stream_id)
