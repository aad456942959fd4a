"""The qyapi endpoints wecom-bus uses, answering as WeCom does (see docs/dev.md).

gettoken, message/send, media/upload, message/recall and message/update_template_card. Sends are
checked against the fake's own table of WeCom's documented rules (``rules.py``, never the
project's validators), then recipients are resolved (invalid ones listed lower-cased, all
invalid → 81013), ``enable_duplicate_check`` is honoured, and each member's 30/min and 1000/h
window is applied: the excess is answered errcode 0 and recorded as dropped, never delivered.

Every endpoint is module-level and reads the fake's state from ``request.app.state.fake``; a
refusal is raised as ``WeComRefusal`` and answered by the app's one error map (``app.py``).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devkit.fakewecom.answers import ok
from devkit.fakewecom.rules import Refusal, check_send, check_update
from devkit.fakewecom.state import FakeApp, FakeState, ResponseCode

__all__ = ["ROUTES", "Recipients", "WeComRefusal", "parse_json", "sniff_type"]

_DAY = 86_400
# What each media message accepts; a file message may carry any uploaded media.
_MEDIA_FOR = {
    "image": {"image"},
    "voice": {"voice"},
    "video": {"video"},
    "file": {"image", "voice", "video", "file"},
}
_UPLOAD_LIMIT = {"image": 10 << 20, "voice": 2 << 20, "video": 10 << 20, "file": 20 << 20}
_INTERACTIVE = {"button_interaction", "vote_interaction", "multiple_interaction"}
_OPTIONS = ("enable_duplicate_check", "duplicate_check_interval")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([\w*]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))')
_NOT_SENT = object()


class WeComRefusal(Refusal):
    """A refusal answered as WeCom does (HTTP 200, errcode); a message/send refusal is also
    recorded as a rejected send, so /fake/messages shows it."""

    def __init__(self, errcode: int, detail: str = "", *, app: str | None = None) -> None:
        super().__init__(errcode, detail)
        self.app = app
        self.send_body: Any = _NOT_SENT

    def sent(self, body: Any) -> WeComRefusal:
        self.send_body = body
        return self

    @property
    def is_send(self) -> bool:
        return self.send_body is not _NOT_SENT


def _ids(joined: Any) -> list[str]:
    return [part.strip() for part in str(joined or "").split("|") if part.strip()]


@dataclass(slots=True)
class Recipients:
    members: list[str] = field(default_factory=list)  # licensed members to deliver to
    invaliduser: list[str] = field(default_factory=list)
    invalidparty: list[str] = field(default_factory=list)
    invalidtag: list[str] = field(default_factory=list)
    unlicenseduser: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, state: FakeState, body: dict[str, Any]) -> Recipients:
        out = cls()
        targets: list[str] = []
        users = _ids(body.get("touser"))
        if "@all" in users:  # toparty and totag are ignored with @all
            targets = list(state.members)
        else:
            for user in (u.lower() for u in users):
                (targets if user in state.member_set else out.invaliduser).append(user)
            for ids, table, invalid in (
                (_ids(body.get("toparty")), state.parties, out.invalidparty),
                (_ids(body.get("totag")), state.tags, out.invalidtag),
            ):
                for raw in ids:
                    key = int(raw) if raw.isdigit() else -1
                    if key in table:
                        targets.extend(table[key])
                    else:
                        invalid.append(raw)
        for member in dict.fromkeys(targets):  # once each, in order
            (out.unlicenseduser if member in state.unlicensed else out.members).append(member)
        return out

    def answer(self) -> dict[str, str]:
        fields = ("invaliduser", "invalidparty", "invalidtag", "unlicenseduser")
        return {name: "|".join(getattr(self, name)) for name in fields if getattr(self, name)}


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


_sorted_json = msgspec.json.Encoder(order="sorted").encode  # keys sorted at every depth


def _dedup_key(body: dict[str, Any]) -> str:
    # The options are left out: a retry that adds enable_duplicate_check=1 to a body already
    # delivered is the case the check exists for.
    kept = {k: v for k, v in body.items() if k not in _OPTIONS}
    return _sorted_json(kept).decode()


def _state(request: Request) -> FakeState:
    state: FakeState = request.app.state.fake
    return state


def _token_app(request: Request) -> FakeApp:
    found = _state(request).app_for_token(request.query_params.get("access_token"))
    if isinstance(found, int):
        raise WeComRefusal(found)
    return found


def _check_agentid(body: dict[str, Any], app: FakeApp, required: bool = True) -> None:
    if "agentid" not in body:
        if required:
            raise WeComRefusal(41011, app=app.name)  # 41011 缺少agentid参数
        return
    agentid = body["agentid"]
    if isinstance(agentid, bool) or agentid != app.agent_id:
        raise WeComRefusal(40056, "not the agentid of this access_token", app=app.name)


async def gettoken(request: Request) -> Response:
    corp_id = request.query_params.get("corpid")
    secret = request.query_params.get("corpsecret")
    if not corp_id:
        raise WeComRefusal(41002)
    if not secret:
        raise WeComRefusal(41004)
    state = _state(request)
    token = state.get_token(corp_id, secret)
    if isinstance(token, int):
        raise WeComRefusal(token)
    expires_in = max(1, math.ceil(token.expires_at - state.clock()))
    return ok(access_token=token.value, expires_in=expires_in)


def _checked_send(request: Request, app: FakeApp, body: Any) -> dict[str, Any]:
    """The body when WeCom would take it; raises the refusal WeCom would answer."""
    try:
        msgtype = check_send(body)
    except Refusal as exc:
        raise WeComRefusal(exc.errcode, exc.detail, app=app.name) from None
    # miniprogram_notice carries no agentid; every other message must name this app's.
    _check_agentid(body, app, required=msgtype != "miniprogram_notice")
    if msgtype in _MEDIA_FOR and not _media_ok(
        _state(request), app, body[msgtype]["media_id"], msgtype
    ):
        raise WeComRefusal(40007, app=app.name)
    return dict(body)


async def message_send(request: Request) -> Response:
    body = parse_json(await request.body())
    try:
        app = _token_app(request)
        body = _checked_send(request, app, body)
        state = _state(request)
        recipients = Recipients.resolve(state, body)
        if not recipients.members and not recipients.unlicenseduser:
            raise WeComRefusal(81013, app=app.name)
    except WeComRefusal as exc:
        raise exc.sent(body) from None
    key = (app.name, _dedup_key(body))
    prior = state.recent.get(key)
    interval = body.get("duplicate_check_interval", 1800)
    if body.get("enable_duplicate_check") and prior and state.clock() - prior.time < interval:
        # UNCONFIRMED what WeCom answers here; we answer ok with the original's msgid.
        state.new_send(
            app.name,
            body,
            "suppressed",
            msgid=prior.msgid,
            duplicate_of=prior.seq,
            recipients=recipients.members,
        )
        return ok(**recipients.answer(), msgid=prior.msgid)
    fields = _deliver(state, app, body, recipients)
    return ok(**recipients.answer(), **fields)


def _deliver(
    state: FakeState, app: FakeApp, body: dict[str, Any], recipients: Recipients
) -> dict[str, Any]:
    """Record the send, each member through their 30/min and 1000/h window."""
    delivered: list[str] = []
    dropped: list[str] = []
    for member in recipients.members:
        (delivered if state.admit(app.name, member) else dropped).append(member)
    status = "dropped" if dropped and not delivered else "partial" if dropped else "delivered"
    fields: dict[str, Any] = {"msgid": secrets.token_urlsafe(48)}
    card = body.get("template_card") if body["msgtype"] == "template_card" else None
    if isinstance(card, dict) and card.get("card_type") in _INTERACTIVE:
        fields["response_code"] = secrets.token_urlsafe(32)
    record = state.new_send(
        app.name,
        body,
        status,
        recipients=recipients.members,
        delivered=delivered,
        dropped=dropped,
        invaliduser=recipients.invaliduser,
        invalidparty=recipients.invalidparty,
        invalidtag=recipients.invalidtag,
        unlicenseduser=recipients.unlicenseduser,
        **fields,
    )
    if record.response_code:
        code = ResponseCode(app.name, record.time, record)
        state.response_codes[record.response_code] = code
    state.recent[(app.name, _dedup_key(body))] = record
    return fields


async def media_upload(request: Request) -> Response:
    app = _token_app(request)
    kind = request.query_params.get("type", "")
    if kind not in _UPLOAD_LIMIT:
        raise WeComRefusal(40004)
    part = await _media_part(request, _UPLOAD_LIMIT[kind])
    if part is None:
        raise WeComRefusal(44001)
    if isinstance(part, int):
        raise WeComRefusal(part)
    filename, content = part
    if len(content) <= 5:
        raise WeComRefusal(40006, "every file must be larger than 5 bytes")
    if not _looks_like(kind, content):
        raise WeComRefusal(40005, f"not a {kind} file WeCom accepts")
    state = _state(request)
    now = state.clock()
    media = state.store_media(app.name, kind, filename, content, sniff_type(content))
    return JSONResponse(
        {
            "errcode": 0,
            "errmsg": "",
            "type": kind,
            "media_id": media.media_id,
            "created_at": str(int(now)),
        }
    )


async def recall(request: Request) -> Response:
    app = _token_app(request)
    body = parse_json(await request.body())
    msgid = body.get("msgid") if isinstance(body, dict) else None
    if not isinstance(msgid, str) or not msgid:
        raise WeComRefusal(40035, "msgid is required")
    state = _state(request)
    record = state.by_msgid.get(msgid)
    # UNCONFIRMED: the errcode WeCom gives for an unknown, old or recalled msgid.
    if record is None or record.app != app.name or record.recalled:
        raise WeComRefusal(40035, "invalid msgid")
    if state.clock() - record.time > _DAY:
        raise WeComRefusal(40035, "only messages of the last 24 hours can be recalled")
    record.recalled = True
    state.touch(record)
    return ok()


async def update_template_card(request: Request) -> Response:
    app = _token_app(request)
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise WeComRefusal(47001)
    _check_agentid(body, app)
    try:
        check_update(body)
    except Refusal as exc:
        raise WeComRefusal(exc.errcode, exc.detail) from None
    state = _state(request)
    code = state.response_codes.get(body["response_code"])
    if code is None or code.app != app.name:
        raise WeComRefusal(40035, "invalid response_code")
    del state.response_codes[body["response_code"]]  # single use
    if state.clock() - code.issued_at > 3 * _DAY:
        raise WeComRefusal(40035, "response_code older than 72 hours")
    if code.record is not None:
        code.record.card_update = body
        state.touch(code.record)
    return ok()


async def agent_get(request: Request) -> Response:
    """The app's own settings (``wecom-bus check`` reads them): its token reads its own app only."""
    app = _token_app(request)
    raw = request.query_params.get("agentid", "")
    if not raw:
        raise WeComRefusal(41011, app=app.name)
    state = _state(request)
    if raw != str(app.agent_id):
        known = {str(a.agent_id) for a in state.apps.values()}
        raise WeComRefusal(301002 if raw in known else 40056, app=app.name)
    return ok(
        agentid=app.agent_id,
        name=app.name,
        close=int(app.closed),
        allow_userinfos={"user": [{"userid": m} for m in state.members]},
        allow_partys={"partyid": sorted(state.parties)},
        allow_tags={"tagid": sorted(state.tags)},
    )


ROUTES = [
    Route("/cgi-bin/gettoken", gettoken, methods=["GET"]),
    Route("/cgi-bin/agent/get", agent_get, methods=["GET"]),
    Route("/cgi-bin/message/send", message_send, methods=["POST"]),
    Route("/cgi-bin/media/upload", media_upload, methods=["POST"]),
    Route("/cgi-bin/message/recall", recall, methods=["POST"]),
    Route("/cgi-bin/message/update_template_card", update_template_card, methods=["POST"]),
]


def _media_ok(state: FakeState, app: FakeApp, media_id: str, msgtype: str) -> bool:
    media = state.media.get(media_id)
    return (
        media is not None
        and media.type in _MEDIA_FOR[msgtype]
        and state.apps[media.app].corp_id == app.corp_id  # shared by the corp's apps
        and state.clock() - media.created_at <= 3 * _DAY
    )


def sniff_type(content: bytes) -> str:
    """The Content-Type media/get answers for a stored file (by its first bytes)."""
    for magic, media_type in _MAGIC:
        if content.startswith(magic):
            return media_type
    return "video/mp4" if content[4:8] == b"ftyp" else "application/octet-stream"


_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"#!AMR", "audio/amr"))


def _looks_like(kind: str, content: bytes) -> bool:
    """WeCom takes JPG/PNG images, AMR voice and MP4 video; files may be anything."""
    if kind == "image":
        return content.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"))
    if kind == "voice":
        return content.startswith(b"#!AMR")
    if kind == "video":
        return content[4:8] == b"ftyp"
    return True


async def _media_part(request: Request, limit: int) -> tuple[str, bytes] | int | None:
    """The multipart field ``media`` as (filename, bytes); an errcode when too large."""
    match = _BOUNDARY.search(request.headers.get("content-type", ""))
    if match is None:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + 64 * 1024:  # room for the multipart headers
            return 45001
        chunks.append(chunk)
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    for part in b"".join(chunks).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        params: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                params = {m[0].lower(): m[1] or m[2] for m in _PARAM.findall(line)}
        if params.get("name") != "media":
            continue
        content = content.removesuffix(b"\r\n")
        if len(content) > limit:
            return 45001
        return params.get("filename", "media"), content
    return None
