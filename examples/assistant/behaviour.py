"""What the assistant does with one text message.

1. ``/reset`` or ``新对话`` forgets the member's conversation and says so.
2. Otherwise the member's recent turns (``shared.bus.memory``) and the new text go to the model.
   The answer is streamed, gathered into parts (``parts.Parts``) and each part is put on the
   outbox as soon as it is complete (``shared.bus.interim.send_now``), so the member reads the
   first paragraph while the model is still writing. Part ids come from the event's entry id,
   so parts an earlier delivery already enqueued are not enqueued again.
3. If nothing was sent after ``ASSISTANT_INTERIM_AFTER`` seconds, "正在思考…" is sent, once.
4. The exchange is remembered (once per event, however often it is delivered).

A message to an AI bot (``handle_bot``) is answered on the stream the member watches
(``ctx.bot_stream``): each piece of the model's answer is appended as it arrives, and the
stream is finished at the end; the same memory (per bot and member) and the same failures
apply, a polite text finishing the stream.

Model API failures (``llm.ModelError``) never pass silently: a rejected key or a refused request
gets a polite reply at once (and an error in the log); a rate limit is retried after its
Retry-After, an unavailable model after a growing backoff, and on the last delivery the member
gets a polite reply instead of a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping

import httpx
from redis.asyncio import Redis

from examples.assistant.config import AssistantConfig
from examples.assistant.llm import ChatClient, Message, ModelError
from examples.assistant.parts import Parts
from shared.bus import Context, Retry
from shared.bus.interim import Interim, delivered, early_id, send_now
from shared.bus.memory import Memory, Turn
from shared.bus.router import Reply
from shared.config import Settings
from shared.schemas.aibot import BotText
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

__all__ = ["REPLIES", "RESET_WORDS", "Assistant", "backoff"]

log = logging.getLogger("wecom_bus.examples.assistant")

RESET_WORDS = frozenset({"/reset", "新对话"})
REPLIES = {
    "reset": "好的，之前的对话已清除，我们重新开始。",
    "auth": "抱歉，助手暂时无法使用（模型服务的配置有误），已通知管理员。",
    "refused": "抱歉，这个问题我暂时无法回答。可以换个说法，或发送“新对话”重新开始。",
    "rate": "抱歉，现在问的人太多了，请稍后再试。",
    "down": "抱歉，模型服务暂时不可用，请稍后再试。",
    "empty": "抱歉，我没有想出答案，请换个说法再试。",
}
_MENTION = re.compile(r"^\s*@\S+\s*")  # a bot's group messages start with "@bot"
RATE_DEFAULT_WAIT = 10.0  # a 429 without Retry-After
RATE_MAX_WAIT = 600.0


def backoff(delivery: int, base: float = 5.0, cap: float = 120.0) -> float:
    """Seconds before delivery ``delivery + 1`` after the model was unavailable: 5, 10, 20 …

    Growing waits give a struggling provider room; the cap keeps the member's wait bounded.
    """
    return min(cap, base * 2.0 ** max(0, delivery - 1))


class Assistant:
    """One process's assistant: the model client (with its pool), the memory and the limits."""

    def __init__(
        self,
        config: AssistantConfig,
        client: ChatClient,
        memory: Memory,
        *,
        max_deliveries: int,
        maxlen: int,
    ) -> None:
        self.config, self.client, self.memory = config, client, memory
        self.max_deliveries, self.maxlen = max_deliveries, maxlen

    def __repr__(self) -> str:
        return f"Assistant({self.client!r})"

    @classmethod
    def open(
        cls,
        environ: Mapping[str, str],
        redis: Redis,
        settings: Settings,
        *,
        behaviour: str = "assistant",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Assistant:
        """Read the configuration and open the HTTP client (``transport``: tests)."""
        config = AssistantConfig.from_environ(environ)
        memory = Memory(
            redis,
            behaviour,
            prefix=settings.prefix,
            max_turns=config.memory_turns,
            max_bytes=config.memory_bytes,
            ttl=config.memory_ttl,
        )
        return cls(
            config,
            ChatClient.open(config, transport),
            memory,
            max_deliveries=settings.max_deliveries,
            maxlen=settings.stream_maxlen,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def handle(self, msg: TextMessage, ctx: Context) -> Reply:
        """Answer ``msg`` (see the module docstring)."""
        text, user = msg.content.strip(), msg.from_user
        if text.lower() in RESET_WORDS:
            await self.memory.clear(ctx.app, user)
            return TextSend.reply_to(msg, REPLIES["reset"])
        history = await self.memory.history(ctx.app, user, exclude=ctx.entry_id)
        try:
            answer = await self._answer(msg, ctx, self._messages(history, text))
        except ModelError as exc:
            return TextSend.reply_to(msg, self._failed(ctx, exc))
        if not answer:
            return TextSend.reply_to(msg, REPLIES["empty"])
        await self.memory.append(ctx.app, user, Turn(id=ctx.entry_id, user=text, assistant=answer))
        return None

    async def handle_bot(self, msg: BotText, ctx: Context) -> None:
        """Answer a bot message on its stream, the model's pieces appended as they arrive.

        A redelivered message writes the same numbered appends again, which the stream ignores
        (``shared.aibot.answer``): the member never sees text twice.
        """
        text, user, stream = _MENTION.sub("", msg.content).strip(), msg.from_user, ctx.bot_stream
        if text.lower() in RESET_WORDS:
            await self.memory.clear(ctx.app, user)
            await stream.say(REPLIES["reset"])
            return
        history = await self.memory.history(ctx.app, user, exclude=ctx.entry_id)
        pieces: list[str] = []
        try:
            async with asyncio.timeout(self.config.timeout):
                async for piece in self._pieces(self._messages(history, text)):
                    pieces.append(piece)
                    await stream.append(piece)
        except (TimeoutError, ModelError) as exc:
            error = exc if isinstance(exc, ModelError) else self._timed_out()
            # Retry leaves the stream open: the next delivery continues after what was shown.
            await stream.finish(("\n\n" if pieces else "") + self._failed(ctx, error))
            return
        answer = "".join(pieces).strip()
        if answer:
            await self.memory.append(
                ctx.app, user, Turn(id=ctx.entry_id, user=text, assistant=answer)
            )
        await stream.finish("" if answer else REPLIES["empty"])

    def _messages(self, history: list[Turn], text: str) -> list[Message]:
        messages = (
            [Message("system", self.config.system_prompt)] if self.config.system_prompt else []
        )
        for turn in history:
            messages += [Message("user", turn.user), Message("assistant", turn.assistant)]
        messages.append(Message("user", text))
        return messages

    async def _answer(self, msg: TextMessage, ctx: Context, messages: list[Message]) -> str:
        """Stream the answer to the member part by part, in order; return it whole.

        The model is read by its own task, so ``LLM_TIMEOUT`` counts the model's time only, not
        the time parts wait for the sender.
        """
        ready: asyncio.Queue[str | None] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(messages, ready))
        producer.add_done_callback(lambda _: ready.put_nowait(None))
        thinking = TextSend.reply_to(msg, self.config.interim_text)
        after = self.config.interim_after or None
        prefix, redis = self.memory.prefix, self.memory.redis
        try:
            async with Interim(
                redis, ctx, thinking, after=after, prefix=prefix, maxlen=self.maxlen
            ) as interim:
                await _PartSender(self, msg, ctx, interim).run(ready)
            return await producer
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, messages: list[Message], ready: asyncio.Queue[str | None]) -> str:
        """Read the model's answer, queueing each part as it completes; return the whole."""
        # Paragraph by paragraph: _PartSender decides how many travel together.
        parts = Parts(max_bytes=self.config.part_bytes, min_bytes=16)
        pieces: list[str] = []
        try:
            async with asyncio.timeout(self.config.timeout):
                async for piece in self._pieces(messages):
                    pieces.append(piece)
                    for part in parts.feed(piece):
                        ready.put_nowait(part)
        except TimeoutError:
            raise self._timed_out() from None
        for part in parts.finish():
            ready.put_nowait(part)
        return "".join(pieces).strip()

    def _timed_out(self) -> ModelError:
        return ModelError("down", f"no full answer within {self.config.timeout:g} s")

    async def _pieces(self, messages: list[Message]) -> AsyncIterator[str]:
        if self.config.stream:
            async for piece in self.client.stream(messages):
                yield piece
        else:
            yield await self.client.complete(messages)

    def _failed(self, ctx: Context, exc: ModelError) -> str:
        """The polite text, or ``Retry`` while deliveries remain (see the module docstring)."""
        # The consumer's own limit; BUS_MAX_DELIVERIES for a Context made by hand.
        last = ctx.last_delivery if ctx.max_deliveries else ctx.delivery >= self.max_deliveries
        fields = {"kind": exc.kind, "status": exc.status, "delivery": ctx.delivery, "last": last}
        if exc.kind in ("auth", "refused"):
            log.error("model API refused: %s", exc.detail, extra=fields)
            return REPLIES[exc.kind]
        log.warning("model API unavailable: %s", exc.detail, extra=fields)
        if last:
            return REPLIES[exc.kind]
        if exc.kind == "rate":
            wait = exc.retry_after if exc.retry_after is not None else RATE_DEFAULT_WAIT
            raise Retry(defer=min(RATE_MAX_WAIT, max(1.0, wait)), reason="model API rate limit")
        wait = backoff(ctx.delivery, self.config.retry_base)
        raise Retry(defer=wait, reason="model API unavailable")


class _PartSender:
    """Puts an answer's parts on the outbox, in order, one after the other's delivery.

    The sender handles outbox entries concurrently, so each part waits (up to
    ``ASSISTANT_PART_WAIT`` seconds) for the previous one — or the interim reply — to be
    delivered: the member reads the parts in order. The first paragraph goes at once; later
    parts hold ``ASSISTANT_PART_MIN_BYTES`` to ``ASSISTANT_PART_BYTES`` (or the rest of the
    answer), cut by the text alone so that a redelivery makes the same parts.
    """

    def __init__(self, assistant: Assistant, msg: TextMessage, ctx: Context, interim: Interim):
        self.assistant, self.msg, self.ctx, self.interim = assistant, msg, ctx, interim
        self.limit, self.min_bytes = assistant.config.part_bytes, assistant.config.part_min_bytes
        self.count = 0
        self.previous: str | None = None
        self.pending: deque[str] = deque()
        self.finished = False

    async def run(self, ready: asyncio.Queue[str | None]) -> None:
        """Send every part ``ready`` yields until its None."""
        while self.pending or not self.finished:
            if not self.pending:
                self._take(await ready.get())
                continue
            await self._wait_turn()
            # The first part goes at once; later ones gather at least ASSISTANT_PART_MIN_BYTES.
            while self.count and not self.finished and self._size() < self.min_bytes:
                self._take(await ready.get())
            await self._enqueue(self._next_part())

    def _next_part(self) -> str:
        """The next part: the first paragraph alone, later ones joined up to the least size.

        Parts depend on the answer's text only, never on timing (how many paragraphs happened
        to be queued): a redelivered event cuts the same answer into the same parts, so the
        parts an earlier delivery enqueued (same ids) are skipped and none is repeated or lost.
        """
        part = self.pending.popleft()
        while (
            self.count
            and self.pending
            and len(part.encode()) < self.min_bytes
            and len(f"{part}\n\n{self.pending[0]}".encode()) <= self.limit
        ):
            part = f"{part}\n\n{self.pending.popleft()}"
        return part

    def _size(self) -> int:
        return sum(len(p.encode()) + 2 for p in self.pending)

    def _take(self, item: str | None) -> None:
        if item is None:
            self.finished = True
        else:
            self.pending.append(item)

    async def _wait_turn(self) -> None:
        a = self.assistant
        if self.count == 0:
            await self.interim.settle()
            self.previous = self.interim.id if self.interim.sent else None
        if self.previous is not None and a.config.part_wait > 0:
            await delivered(
                a.memory.redis, self.previous, prefix=a.memory.prefix, patience=a.config.part_wait
            )

    async def _enqueue(self, part: str) -> None:
        a, label, index = self.assistant, "part", self.count
        request = TextSend.reply_to(self.msg, part)
        await send_now(
            a.memory.redis,
            self.ctx,
            request,
            label=label,
            index=index,
            prefix=a.memory.prefix,
            maxlen=a.maxlen,
        )
        self.previous = early_id(self.ctx, label, index)
        self.count += 1
