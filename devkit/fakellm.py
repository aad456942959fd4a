"""A stand-in OpenAI-compatible chat completions server, for tests and ``make dev``.

It lets the assistant behaviour be tried, and tested, with no network and no model::

    python -m devkit.fakellm --port 8090 --api-key sk-fake --model fake-chat

``POST /v1/chat/completions`` answers as the OpenAI API does, non-streaming or streaming
(``text/event-stream``: ``data: {chunk}`` lines, then ``data: [DONE]``). It checks
``Authorization: Bearer <key>`` (401 otherwise) and the ``model`` field (404 for an unknown one).

The "model" remembers nothing: it answers from the messages it is sent, deterministically.

- "我的名字是X" (or "my name is X") in an earlier user message, then "我叫什么" (or "what is my
  name") → "你叫X。"; with no such message → "我还不知道你的名字。"
- a last message containing ``long`` or ``长文`` → about 5,000 bytes of numbered paragraphs
  mixing Chinese, ASCII and emoji, separated by blank lines;
- anything else → "收到：<the message>".

For tests: ``GET /_fake/requests`` lists every request received (whether the key matched, the
model, the messages, whether it streamed; never the key itself), ``DELETE`` clears the list;
``POST /_fake/faults`` queues faults, each used by the next ``count`` requests::

    {"status": 429, "retry_after": 2, "count": 1}   # or 401, 500, 503 …
    {"delay": 30}                                   # answer late (a client timeout)

``DELETE /_fake/faults`` clears them. Faults come after the key check, so a 401 fault can be
told from a wrong key by the recorded ``authorized`` field.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_MODEL",
    "FakeLLM",
    "Fault",
    "answer",
    "assistant_env",
    "command",
    "create_app",
    "main",
]

DEFAULT_KEY = "sk-fake-llm"
DEFAULT_MODEL = "fake-chat"
CHUNK_CHARS = 8  # characters per streamed delta: small, so paragraphs span many chunks
LONG_BYTES = 5_000

_NAME = re.compile(r"(?:我的名字是|我叫(?!什么)|my name is\s+)\s*([^\s，。,.!！?？]+)", re.I)
_ASK_NAME = re.compile(r"我叫什么|what(?:'s| is) my name", re.I)
_LONG = re.compile(r"long|长文", re.I)


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message]
    stream: bool = False


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    status: int = 0  # an HTTP error to answer (0: none)
    retry_after: float | None = None  # Retry-After header of the error
    delay: float = 0.0  # seconds to wait before answering
    count: int = 1  # how many requests it applies to


_request_decoder = msgspec.json.Decoder(ChatRequest)
_fault_decoder = msgspec.json.Decoder(Fault)


def long_text(target: int = LONG_BYTES) -> str:
    """Numbered paragraphs of mixed scripts, together at least ``target`` UTF-8 bytes."""
    paragraphs: list[str] = []
    size, n = 0, 0
    while size < target:
        n += 1
        paragraph = (
            f"第{n}段 Paragraph {n} 🚀：企业微信的消息总线把回调、处理与发送分开，"
            f"each stage can fail and retry on its own ✅. 这一段用于检验长回答能否按顺序、"
            f"完整地分段送达 (part {n}, 中文 + ASCII + emoji 🎉)。"
        )
        paragraphs.append(paragraph)
        size += len(paragraph.encode()) + 2
    return "\n\n".join(paragraphs)


def answer(messages: Sequence[Message]) -> str:
    """The deterministic reply to a conversation: it depends only on ``messages``."""
    users = [m.content for m in messages if m.role == "user"]
    question = users[-1] if users else ""
    if _ASK_NAME.search(question):
        names = [m.group(1) for text in users[:-1] for m in [_NAME.search(text)] if m]
        return f"你叫{names[-1]}。" if names else "我还不知道你的名字。"
    if _LONG.search(question):
        return long_text()
    return f"收到：{question}"


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeLLM:
    """The server's state: the key and models it accepts, recorded requests, queued faults."""

    def __init__(self, api_key: str = DEFAULT_KEY, models: Sequence[str] = (DEFAULT_MODEL,)):
        self._key = api_key.encode()
        self.models = frozenset(models)
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.chunk_delay = 0.0  # seconds between streamed chunks (make dev shows the stream)

    def __repr__(self) -> str:
        return f"FakeLLM(models={sorted(self.models)})"

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self._key)

    def next_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.count <= 1:
            self.faults.pop(0)
        else:
            self.faults[0] = msgspec.structs.replace(fault, count=fault.count - 1)
        return fault

    async def completions(self, request: Request) -> Response:
        record: dict[str, Any] = {"authorized": self.authorized(request), "at": time.time()}
        self.requests.append(record)
        if not record["authorized"]:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            chat = _request_decoder.decode(await request.body())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, f"bad request body: {exc}", "invalid_request")
        record.update(
            model=chat.model,
            stream=chat.stream,
            messages=[msgspec.structs.asdict(m) for m in chat.messages],
        )
        if chat.model not in self.models:
            return _error(404, f"The model `{chat.model}` does not exist.", "model_not_found")
        if not chat.messages:
            return _error(400, "messages must not be empty", "invalid_request")
        fault = self.next_fault()
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault and fault.status:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else None
            return _error(fault.status, f"injected fault {fault.status}", "fault", headers)
        text = answer(chat.messages)
        if chat.stream:
            return StreamingResponse(self._chunks(chat.model, text), media_type="text/event-stream")
        return JSONResponse(_completion(chat.model, text))

    async def _chunks(self, model: str, text: str) -> AsyncIterator[bytes]:
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        deltas: list[dict[str, str]] = [{"role": "assistant"}]
        deltas += [{"content": text[i : i + CHUNK_CHARS]} for i in range(0, len(text), CHUNK_CHARS)]
        for i, delta in enumerate([*deltas, {}]):
            finish = "stop" if i == len(deltas) else None
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        yield b"data: [DONE]\n\n"

    async def list_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
            return Response(status_code=204)
        return JSONResponse(self.requests)

    async def set_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return Response(status_code=204)
        try:
            fault = _fault_decoder.decode(await request.body())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, f"bad fault: {exc}", "invalid_fault")
        if fault.count < 1 or fault.delay < 0 or not (fault.status == 0 or fault.status >= 400):
            return _error(400, "count >= 1, delay >= 0, status 0 or >= 400", "invalid_fault")
        self.faults.append(fault)
        return JSONResponse({"queued": len(self.faults)})


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": len(text), "total_tokens": len(text)},
    }


async def _health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(fake: FakeLLM | None = None) -> Starlette:
    """The ASGI app; ``app.state.fake`` is its :class:`FakeLLM` (tests inspect it in-process)."""
    fake = fake or FakeLLM()
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", fake.completions, methods=["POST"]),
            Route("/_fake/requests", fake.list_requests, methods=["GET", "DELETE"]),
            Route("/_fake/faults", fake.set_faults, methods=["POST", "DELETE"]),
            Route("/healthz", _health, methods=["GET"]),
        ]
    )
    app.state.fake = fake
    return app


def command(port: int, *, api_key: str = DEFAULT_KEY, chunk_delay: float = 0.0) -> list[str]:
    """The argv that runs the stand-in as a process on 127.0.0.1:``port``."""
    argv = [sys.executable, "-m", "devkit.fakellm", "--port", str(port), "--api-key", api_key]
    return [*argv, "--chunk-delay", f"{chunk_delay:g}"] if chunk_delay else argv


def assistant_env(port: int, *, api_key: str = DEFAULT_KEY) -> dict[str, str]:
    """The settings that point ``examples.assistant`` at a stand-in on 127.0.0.1:``port``.

    For ``wecom-bus dev`` and end-to-end tests: run :func:`command`, add these to the
    environment, and start ``wecom-bus responder --handlers examples.assistant:router``.
    """
    return {
        "LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "LLM_API_KEY": api_key,
        "LLM_MODEL": DEFAULT_MODEL,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m devkit.fakellm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default=DEFAULT_KEY, help="the key clients must send")
    parser.add_argument("--model", action="append", help="an accepted model (repeatable)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args(argv)
    fake = FakeLLM(args.api_key, args.model or [DEFAULT_MODEL])
    fake.chunk_delay = args.chunk_delay
    uvicorn.run(create_app(fake), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
