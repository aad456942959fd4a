"""The fake WeCom's AI-bot side (智能机器人): JSON callbacks, stream polling, URL verification.

As WeCom does (docs/aibot.md): a member's message is posted to the bot's URL as encrypted
JSON; if the passive reply is a stream that is not finished, the stream is polled with
``msgtype: "stream"`` callbacks until a reply says ``finish: true`` or six minutes passed
since the message. Each reply is checked the way WeCom reads it (signature, the callback's
nonce, JSON, the stream id, the 20480-byte content limit); a reply that fails ends the
conversation as ``failed`` with the reason. How often WeCom polls is not published: here every
``FAKE_WECOM_BOT_POLL_INTERVAL`` seconds (default 0.5).

Routes (devkit/fakewecom/botroutes.py; the chat page's bot mode uses them):
    GET  /fake/bots                      the bots (names only)
    POST /fake/bot/messages              {bot, from, content, chattype?, chatid?}: a text message
    GET  /fake/bot/messages?since=REV    conversations, with the answer as it grows
    POST /fake/bot/enter                 {bot, from}: enter_chat; the welcome comes back
    POST /fake/bot/verify                {bot}: the console's URL verification
    POST /cgi-bin/aibot/response         an active reply through a message's response_url:
                                         once per URL, within an hour, markdown or (single
                                         chats) template_card; it joins that conversation
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from starlette.exceptions import HTTPException

from shared.config import load_settings
from shared.errors import CryptoError
from shared.protocol.aibot import build_bot_callback, build_bot_url_verification, decrypt_bot_reply
from shared.protocol.aibot_reply import MAX_STREAM_BYTES
from shared.protocol.crypto import CallbackCrypto

__all__ = ["BotRecord", "FakeBot", "FakeBots", "bots_from_env"]

MAX_WAIT = 360.0  # "从用户发消息开始最多等待6min" (path/100719)


@dataclass(frozen=True, slots=True)
class FakeBot:
    name: str
    aibotid: str
    crypto: CallbackCrypto
    url: str


@dataclass(slots=True)
class BotRecord:
    """One member message (or enter_chat) and what the bot answered, as the member saw it."""

    seq: int
    rev: int
    bot: str
    from_user: str
    msgid: str
    kind: str  # "text" or "enter_chat"
    content: str  # what the member wrote
    status: str = "answering"  # answering, finished, answered, no_reply, failed, gave_up
    stream_id: str = ""
    answer: str = ""  # the stream's text so far, or the welcome text
    polls: int = 0
    error: str | None = None
    shown: list[str] = field(default_factory=list)  # each distinct text the member saw
    responses: list[Any] = field(default_factory=list)  # active replies via response_url

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "rev": self.rev,
            "bot": self.bot,
            "from": self.from_user,
            "msgid": self.msgid,
            "kind": self.kind,
            "content": self.content,
            "status": self.status,
            "stream_id": self.stream_id,
            "answer": self.answer,
            "polls": self.polls,
            "error": self.error,
            "shown": list(self.shown),
            "responses": list(self.responses),
        }


class _Failed(Exception):
    pass


@dataclass(slots=True)
class _Code:
    """A response_code handed out in a message callback."""

    record: BotRecord
    chattype: str
    issued: float
    used: bool = False


_NOT_DOCUMENTED = "fake: WeCom's code for this case is not documented"


class FakeBots:
    """The bots WeCom knows, and every conversation with them since start."""

    def __init__(
        self,
        bots: Mapping[str, FakeBot],
        *,
        poll_interval: float = 0.5,
        max_wait: float = MAX_WAIT,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        api_base: str = "https://qyapi.weixin.qq.com",
    ) -> None:
        self.bots = dict(bots)
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.timeout = timeout
        self._client = client
        self.records: list[BotRecord] = []
        self.rev = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False  # ends the polls even if a cancel is lost (see aclose)
        self.api_base = api_base.rstrip("/")
        self.codes: dict[str, _Code] = {}

    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # trust_env=False: a developer's HTTP_PROXY must not catch it
            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    def bump(self, record: BotRecord) -> None:
        self.rev += 1
        record.rev = self.rev

    async def aclose(self) -> None:
        """Stop the polls and close the client. A cancel alone may not stop a poll: on Python
        3.11 one landing as redis-py's write finishes (its asyncio.wait_for, in the ingress the
        poll calls in process) is lost, and the poll returns as if nothing happened."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def bot(self, name: str) -> FakeBot:
        if name not in self.bots:
            raise HTTPException(404, f"unknown bot {name!r}")
        return self.bots[name]

    def _new(self, bot: FakeBot, from_user: str, kind: str, content: str) -> BotRecord:
        self.rev += 1
        msgid = secrets.token_hex(16)  # a real capture shows 32 hex characters
        record = BotRecord(self.rev, self.rev, bot.name, from_user, msgid, kind, content)
        self.records.append(record)
        return record

    async def _post(self, bot: FakeBot, callback: dict[str, Any]) -> Any:
        """One callback as WeCom sends it → the decrypted reply (None for an empty body)."""
        nonce = secrets.token_hex(8)
        params, body = build_bot_callback(
            bot.crypto, callback, timestamp=str(int(time.time())), nonce=nonce
        )
        try:
            response = await self.client().post(
                bot.url, params=params, content=body, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise _Failed(f"no answer: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _Failed(f"HTTP {response.status_code}")
        try:
            return decrypt_bot_reply(bot.crypto, response.content, nonce=nonce)
        except (CryptoError, msgspec.DecodeError) as exc:
            raise _Failed(f"reply refused: {exc}") from None

    def _common(
        self, bot: FakeBot, record: BotRecord, chattype: str, chatid: str | None
    ) -> dict[str, Any]:
        common: dict[str, Any] = {
            "msgid": record.msgid,
            "aibotid": bot.aibotid,
            "chattype": chattype,
            "from": {"userid": record.from_user},
        }
        if chattype == "group" and chatid:
            common["chatid"] = chatid
        return common

    async def send_text(
        self,
        name: str,
        from_user: str,
        content: str,
        *,
        chattype: str = "single",
        chatid: str | None = None,
    ) -> BotRecord:
        """A member's text message; an unfinished stream reply is then polled in the background."""
        bot = self.bot(name)
        record = self._new(bot, from_user, "text", content)
        code = secrets.token_hex(16)
        self.codes[code] = _Code(record, chattype, time.monotonic())
        callback = {
            **self._common(bot, record, chattype, chatid),
            "response_url": f"{self.api_base}/cgi-bin/aibot/response?response_code={code}",
            "msgtype": "text",
            "text": {"content": content},
        }
        try:
            reply = await self._post(bot, callback)
            self._take_stream(record, reply, first=True)
        except _Failed as exc:
            self._fail(record, str(exc))
            return record
        if record.status == "answering":
            task = asyncio.create_task(
                self._follow(bot, record, chattype, chatid, time.monotonic())
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return record

    def _take_stream(self, record: BotRecord, reply: Any, *, first: bool) -> None:
        """Check a stream reply as WeCom would and show it to the member."""
        if reply is None:
            record.status = "no_reply"
            self.bump(record)
            return
        stream = reply.get("stream") if isinstance(reply, dict) else None
        if (
            not isinstance(reply, dict)
            or reply.get("msgtype") not in ("stream", "stream_with_template_card")
            or not isinstance(stream, dict)
        ):
            raise _Failed("not a stream reply")
        stream_id, text = stream.get("id"), stream.get("content", "")
        if (
            not isinstance(stream_id, str)
            or not stream_id
            or (not first and stream_id != record.stream_id)
        ):
            raise _Failed("stream id missing or changed")
        if not isinstance(text, str) or len(text.encode()) > MAX_STREAM_BYTES:
            raise _Failed("stream content is not text of at most 20480 bytes")
        if stream.get("msg_item") and stream.get("finish") is not True:
            raise _Failed("msg_item before finish")
        record.stream_id, record.answer = stream_id, text
        if not record.shown or record.shown[-1] != text:
            record.shown.append(text)
        if stream.get("finish") is True:
            record.status = "finished"
        self.bump(record)

    def _fail(self, record: BotRecord, error: str) -> None:
        record.status, record.error = "failed", error
        self.bump(record)

    async def _follow(
        self, bot: FakeBot, record: BotRecord, chattype: str, chatid: str | None, started: float
    ) -> None:
        """Poll the stream until it finishes, fails or WeCom's six minutes are over."""
        while record.status == "answering" and not self._closing:
            await asyncio.sleep(self.poll_interval)
            if time.monotonic() - started > self.max_wait:
                record.status = "gave_up"
                self.bump(record)
                return
            poll = {
                **self._common(bot, record, chattype, chatid),
                "msgid": secrets.token_hex(16),  # whether WeCom reuses the msgid is unknown
                "msgtype": "stream",
                "stream": {"id": record.stream_id},
            }
            record.polls += 1
            try:
                self._take_stream(record, await self._post(bot, poll), first=False)
            except _Failed as exc:
                self._fail(record, str(exc))

    def take_response(self, code: str, body: Any) -> dict[str, Any]:
        """An active reply as WeCom takes it: a known, unused code of the last hour."""
        known = self.codes.get(code)
        if known is None or known.used or time.monotonic() - known.issued > 3600:
            return {
                "errcode": -1,
                "errmsg": f"response_code unknown, used or expired ({_NOT_DOCUMENTED})",
            }
        msgtype = body.get("msgtype") if isinstance(body, dict) else None
        content = body.get("markdown", {}).get("content") if msgtype == "markdown" else None
        card_ok = msgtype == "template_card" and known.chattype == "single"
        if not card_ok and not (
            isinstance(content, str) and len(content.encode()) <= MAX_STREAM_BYTES
        ):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        known.used = True
        known.record.responses.append(body)
        self.bump(known.record)
        return {"errcode": 0, "errmsg": "ok"}

    async def enter_chat(self, name: str, from_user: str) -> BotRecord:
        bot = self.bot(name)
        record = self._new(bot, from_user, "enter_chat", "")
        callback = {
            **self._common(bot, record, "single", None),
            "create_time": int(time.time()),
            "msgtype": "event",
            "event": {"eventtype": "enter_chat", "enter_chat": {}},
        }
        try:
            reply = await self._post(bot, callback)
        except _Failed as exc:
            self._fail(record, str(exc))
            return record
        if reply is None:
            record.status = "no_reply"
        elif isinstance(reply, dict) and reply.get("msgtype") in ("text", "template_card"):
            text = reply.get("text", {}).get("content", "") if reply["msgtype"] == "text" else ""
            record.status, record.answer = "answered", str(text)
        else:
            record.status, record.error = "failed", "enter_chat allows only text or template_card"
        self.bump(record)
        return record

    async def verify(self, name: str) -> dict[str, Any]:
        bot = self.bot(name)
        echo = secrets.token_hex(12)
        params = build_bot_url_verification(
            bot.crypto, echo.encode(), timestamp=str(int(time.time())), nonce=secrets.token_hex(6)
        )
        try:
            response = await self.client().get(bot.url, params=params, timeout=1.0)
        except httpx.HTTPError as exc:
            return {"ok": False, "detail": f"no answer within 1 s: {type(exc).__name__}"}
        ok = response.status_code == 200 and response.content == echo.encode()
        return {"ok": ok, "status": response.status_code}


def bots_from_env(environ: Mapping[str, str]) -> FakeBots:
    """The bots of WECOM_BOTS_FILE, posting to FAKE_WECOM_CALLBACK_BASE + /bot/<name>."""
    settings = load_settings(environ)
    base = (environ.get("FAKE_WECOM_CALLBACK_BASE", "").strip() or "http://127.0.0.1:8080").rstrip(
        "/"
    )
    bots = {
        name: FakeBot(
            name=name,
            aibotid="aib" + secrets.token_hex(8),
            crypto=CallbackCrypto(bot.token.get(), bot.encoding_aes_key.get(), bot.receive_id),
            url=f"{base}/bot/{name}",
        )
        for name, bot in settings.bots.items()
    }
    raw = environ.get("FAKE_WECOM_BOT_POLL_INTERVAL", "").strip() or "0.5"
    try:
        interval = float(raw)
    except ValueError:
        interval = 0.5
    return FakeBots(bots, poll_interval=max(0.01, interval), api_base=settings.api_base)
