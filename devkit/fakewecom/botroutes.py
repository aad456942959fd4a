"""The fake WeCom's AI-bot routes: the control API of devkit/fakewecom/bot.py, and WeCom's
``response_url`` endpoint (the fake's state of bots is ``request.app.state.bots``)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devkit.fakewecom.bot import FakeBots

__all__ = ["ROUTES"]


class _Say(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bot: str
    from_user: str = msgspec.field(name="from", default="alice")
    content: str = ""
    chattype: str = "single"
    chatid: str | None = None


def _bots(request: Request) -> FakeBots:
    bots: FakeBots = request.app.state.bots
    return bots


async def list_bots(request: Request) -> Response:
    return JSONResponse({"bots": sorted(_bots(request).bots)})


async def say(request: Request) -> Response:
    spec = msgspec.json.decode(await request.body(), type=_Say)
    if not spec.content or spec.chattype not in ("single", "group"):
        raise HTTPException(400, "a text message needs content; chattype is single or group")
    record = await _bots(request).send_text(
        spec.bot, spec.from_user, spec.content, chattype=spec.chattype, chatid=spec.chatid
    )
    return JSONResponse(record.to_json())


async def conversations(request: Request) -> Response:
    bots = _bots(request)
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        since = 0
    found = [r.to_json() for r in bots.records if r.rev > since]
    return JSONResponse({"messages": found, "last": bots.rev})


async def enter(request: Request) -> Response:
    spec = msgspec.json.decode(await request.body(), type=_Say)
    return JSONResponse((await _bots(request).enter_chat(spec.bot, spec.from_user)).to_json())


async def aibot_response(request: Request) -> Response:
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        return JSONResponse({"errcode": 40008, "errmsg": "invalid message type"})
    code = request.query_params.get("response_code", "")
    return JSONResponse(_bots(request).take_response(code, body))


async def verify(request: Request) -> Response:
    body = msgspec.json.decode(await request.body() or b"{}", type=dict[str, Any])
    return JSONResponse(await _bots(request).verify(str(body.get("bot", ""))))


ROUTES = [
    Route("/fake/bots", list_bots, methods=["GET"]),
    Route("/fake/bot/messages", say, methods=["POST"]),
    Route("/fake/bot/messages", conversations, methods=["GET"]),
    Route("/fake/bot/enter", enter, methods=["POST"]),
    Route("/fake/bot/verify", verify, methods=["POST"]),
    Route("/cgi-bin/aibot/response", aibot_response, methods=["POST"]),
]
