"""A small client for OpenAI-compatible chat completions (DeepSeek, Qwen, Moonshot, Ollama, vLLM).

One ``httpx.AsyncClient`` with a connection pool serves every handler of a process; it is
opened by the router's startup hook and closed by its shutdown hook. Every call sends the
configured model and, when one is set, ``Authorization: Bearer <LLM_API_KEY>``.

Failures become one ``ModelError`` whose ``kind`` says what the caller should do:

=============  =============================================  ==================================
kind           when                                           the assistant …
=============  =============================================  ==================================
``auth``       401, 403                                       replies politely, logs; no retry
``rate``       429 (``retry_after`` from Retry-After)         retries after Retry-After
``down``       408, 5xx, timeouts, connection errors          retries with backoff, then replies
``refused``    other 4xx (unknown model, context too long …)  replies politely, logs
=============  =============================================  ==================================

Error texts never hold the API key: it is scrubbed from anything the provider echoes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import msgspec

from examples.assistant.config import AssistantConfig

__all__ = ["ChatClient", "Message", "ModelError", "retry_after"]

Kind = Literal["auth", "rate", "down", "refused"]
_DETAIL_CHARS = 200


class Message(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


class ModelError(Exception):
    """The model API failed; ``kind`` is one of auth, rate, down, refused (see the module)."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind, self.detail, self.status, self.retry_after = kind, detail, status, retry_after
        super().__init__(f"{kind}: {detail}" if status is None else f"{kind} ({status}): {detail}")


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = msgspec.field(default_factory=list)


class _Answer(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Answer


class _Completion(msgspec.Struct):
    choices: list[_Choice]


_chunk = msgspec.json.Decoder(_Chunk)
_completion = msgspec.json.Decoder(_Completion)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Chat completions against ``config.url`` through one pooled client."""

    def __init__(self, config: AssistantConfig, http: httpx.AsyncClient) -> None:
        self.config, self.http = config, http

    def __repr__(self) -> str:
        return f"ChatClient({self.config.url!r}, model={self.config.model!r})"

    @classmethod
    def open(
        cls, config: AssistantConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> ChatClient:
        """A client with a pool of ``config.max_connections`` (``transport``: tests)."""
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        timeout = httpx.Timeout(config.timeout, connect=min(10.0, config.timeout))
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        http = httpx.AsyncClient(
            limits=limits, timeout=timeout, headers=headers, transport=transport
        )
        return cls(config, http)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _body(self, messages: Sequence[Message], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [msgspec.structs.asdict(m) for m in messages],
            "stream": stream,
        }
        if self.config.max_tokens:
            body["max_tokens"] = self.config.max_tokens
        return body

    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())[:_DETAIL_CHARS]
        key = self.config.api_key
        return text.replace(key, "***") if key else text

    async def _fail(self, response: httpx.Response) -> ModelError:
        status = response.status_code
        if status in (401, 403):  # providers echo (part of) the key here: say nothing of it
            return ModelError("auth", "the model API refused the API key", status=status)
        detail = self._scrub((await response.aread()).decode(errors="replace"))
        if status == 429:
            wait = retry_after(response.headers.get("retry-after"))
            return ModelError("rate", detail, status=status, retry_after=wait)
        if status == 408 or status >= 500:
            return ModelError("down", detail, status=status)
        return ModelError("refused", detail, status=status)

    async def complete(self, messages: Sequence[Message]) -> str:
        """The whole answer of one non-streaming call."""
        async for text in self._call(messages, stream=False):
            return text
        return ""

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        """The answer's pieces as the model produces them."""
        async for text in self._call(messages, stream=True):
            yield text

    async def _call(self, messages: Sequence[Message], *, stream: bool) -> AsyncIterator[str]:
        body = self._body(messages, stream)
        try:
            async with self.http.stream("POST", self.config.url, json=body) as response:
                if response.status_code != 200:
                    raise await self._fail(response)
                if not stream:
                    yield self._whole(await response.aread())
                    return
                async for line in response.aiter_lines():
                    piece = self._piece(line)
                    if piece is None:
                        return
                    if piece:
                        yield piece
        except httpx.TimeoutException:
            raise ModelError("down", "the model API timed out") from None
        except httpx.TransportError as exc:
            raise ModelError("down", self._scrub(f"{type(exc).__name__}: {exc}")) from None

    def _whole(self, data: bytes) -> str:
        try:
            choices = _completion.decode(data).choices
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ModelError("down", self._scrub(f"unreadable answer: {exc}")) from None
        return (choices[0].message.content or "") if choices else ""

    def _piece(self, line: str) -> str | None:
        """The text of one SSE line ("" for none); None at ``data: [DONE]``."""
        if not line.startswith("data:"):
            return ""  # blank separators, comments (": keep-alive"), event: lines
        payload = line[5:].strip()
        if payload == "[DONE]":
            return None
        try:
            chunk = _chunk.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ModelError("down", self._scrub(f"unreadable stream chunk: {exc}")) from None
        return "".join(c.delta.content or "" for c in chunk.choices[:1])
