"""The qyapi endpoints wecom-bus uses, answering as WeCom does (reference §6, §7, §9).

gettoken, message/send, media/upload, message/recall and message/update_template_card. Sends are
checked with the project's own ``decode_send_request`` (WeCom's rules as the project knows them),
mapped to WeCom's errcodes; then recipients are resolved (invalid ones listed lower-cased, all
invalid → 81013), ``enable_duplicate_check`` is honoured, and each member's 30/min and 1000/h
window is applied: the excess is answered errcode 0 and recorded as dropped, never delivered.
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

from services.fakewecom.answers import client_ip, error, error_body, ok
from services.fakewecom.state import FakeApp, FakeState, Media, ResponseCode
from shared.errors import SchemaError
from shared.schemas.cards import UpdateTemplateCardRequest
from shared.schemas.outbound import SendRequest, decode_send_request, validate

__all__ = ["Recipients", "parse_json", "routes", "schema_errcode"]

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
_update_decoder = msgspec.json.Decoder(UpdateTemplateCardRequest)


def schema_errcode(exc: SchemaError) -> int:
    """The errcode WeCom gives for what ``decode_send_request`` refused."""
    where, problem = exc.field, exc.problem
    leaf = where.rsplit(".", 1)[-1]
    if where == "$":
        return 47001
    if where == "$.msgtype":
        return 40008
    if where == "$.agentid":
        return 40056
    if where == "$.touser" and problem.startswith("no recipient"):
        return 82001
    if where in ("$.touser", "$.toparty", "$.totag") and "ids; WeCom accepts" in problem:
        return 40032
    if leaf == "articles" and "entries" in problem:
        return 45008 if not problem.startswith("has 0 ") else 40035
    if "bytes in UTF-8" in problem or "characters; WeCom accepts" in problem:
        return 45002
    if leaf == "content" and where.count(".") == 2:  # $.text.content, $.markdown.content
        return 44004
    if leaf == "media_id":
        return 40007
    if leaf == "title" and problem in ("is required", "must not be blank"):
        return 41016
    if leaf == "description" and problem in ("is required", "must not be blank"):
        return 41033
    return 40035


def _ids(joined: str | None) -> list[str]:
    return [part.strip() for part in (joined or "").split("|") if part.strip()]


@dataclass(slots=True)
class Recipients:
    members: list[str] = field(default_factory=list)  # licensed members to deliver to
    invaliduser: list[str] = field(default_factory=list)
    invalidparty: list[str] = field(default_factory=list)
    invalidtag: list[str] = field(default_factory=list)
    unlicenseduser: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, state: FakeState, req: SendRequest) -> Recipients:
        out = cls()
        targets: list[str] = []
        users = _ids(req.touser)
        if "@all" in users:  # toparty and totag are ignored with @all
            targets = list(state.members)
        else:
            for user in (u.lower() for u in users):
                (targets if user in state.member_set else out.invaliduser).append(user)
            for ids, table, invalid in (
                (_ids(req.toparty), state.parties, out.invalidparty),
                (_ids(req.totag), state.tags, out.invalidtag),
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


def _dedup_key(body: dict[str, Any]) -> str:
    # The options are left out: a retry that adds enable_duplicate_check=1 to a body already
    # delivered is the case the check exists for.
    kept = {k: v for k, v in body.items() if k not in _OPTIONS}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False)


def routes(state: FakeState) -> list[Route]:
    """The qyapi routes, bound to ``state``."""

    def token_app(request: Request) -> FakeApp | int:
        return state.app_for_token(request.query_params.get("access_token"))

    async def gettoken(request: Request) -> Response:
        corp_id = request.query_params.get("corpid")
        secret = request.query_params.get("corpsecret")
        if not corp_id:
            return error(request, 41002)
        if not secret:
            return error(request, 41004)
        token = state.get_token(corp_id, secret)
        if isinstance(token, int):
            return error(request, token)
        expires_in = max(1, math.ceil(token.expires_at - state.clock()))
        return ok(access_token=token.value, expires_in=expires_in)

    def refuse(
        request: Request, app: str | None, body: Any, code: int, detail: str = ""
    ) -> Response:
        answer = error_body(code, client_ip(request.client), detail or None)
        state.new_send(app, body, "rejected", errcode=code, errmsg=answer["errmsg"])
        return JSONResponse(answer)

    async def message_send(request: Request) -> Response:
        found = token_app(request)
        raw = await request.body()
        body = parse_json(raw)
        if isinstance(found, int):
            return refuse(request, None, body, found)
        app = found
        try:
            req = decode_send_request(raw)
        except SchemaError as exc:
            return refuse(request, app.name, body, schema_errcode(exc), str(exc))
        msgtype = body["msgtype"]
        if _content_bytes(body, msgtype) > 2048:  # WeCom's limit per message, whatever we split
            return refuse(request, app.name, body, 45002)
        if req.agentid is None and msgtype != "miniprogram_notice":
            return refuse(request, app.name, body, 41011)
        if req.agentid is not None and req.agentid != app.agent_id:
            return refuse(request, app.name, body, 40056, "not the agentid of this access_token")
        if msgtype in _MEDIA_FOR and not _media_ok(state, app, body[msgtype]["media_id"], msgtype):
            return refuse(request, app.name, body, 40007)
        recipients = Recipients.resolve(state, req)
        if not recipients.members and not recipients.unlicenseduser:
            return refuse(request, app.name, body, 81013)
        key = (app.name, _dedup_key(body))
        now = state.clock()
        prior = state.recent.get(key)
        if req.enable_duplicate_check and prior and now - prior.time < req.duplicate_check_interval:
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
        delivered: list[str] = []
        dropped: list[str] = []
        for member in recipients.members:
            (delivered if state.admit(app.name, member) else dropped).append(member)
        status = "dropped" if dropped and not delivered else "partial" if dropped else "delivered"
        fields: dict[str, Any] = {"msgid": secrets.token_urlsafe(48)}
        card = body.get("template_card") if msgtype == "template_card" else None
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
            state.response_codes[record.response_code] = ResponseCode(app.name, now, record)
        state.recent[key] = record
        return ok(**recipients.answer(), **fields)

    async def media_upload(request: Request) -> Response:
        app = token_app(request)
        if isinstance(app, int):
            return error(request, app)
        kind = request.query_params.get("type", "")
        if kind not in _UPLOAD_LIMIT:
            return error(request, 40004)
        part = await _media_part(request, _UPLOAD_LIMIT[kind])
        if part is None:
            return error(request, 44001)
        if isinstance(part, int):
            return error(request, part)
        filename, content = part
        if len(content) <= 5:
            return error(request, 40006, "every file must be larger than 5 bytes")
        if not _looks_like(kind, content):
            return error(request, 40005, f"not a {kind} file WeCom accepts")
        now = state.clock()
        media = Media(secrets.token_urlsafe(48), app.name, kind, filename, len(content), now)
        state.media[media.media_id] = media
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
        app = token_app(request)
        if isinstance(app, int):
            return error(request, app)
        body = parse_json(await request.body())
        msgid = body.get("msgid") if isinstance(body, dict) else None
        if not isinstance(msgid, str) or not msgid:
            return error(request, 40035, "msgid is required")
        record = state.by_msgid.get(msgid)
        # UNCONFIRMED: the errcode WeCom gives for an unknown, old or recalled msgid.
        if record is None or record.app != app.name or record.recalled:
            return error(request, 40035, "invalid msgid")
        if state.clock() - record.time > _DAY:
            return error(request, 40035, "only messages of the last 24 hours can be recalled")
        record.recalled = True
        state.touch(record)
        return ok()

    async def update_template_card(request: Request) -> Response:
        app = token_app(request)
        if isinstance(app, int):
            return error(request, app)
        raw = await request.body()
        body = parse_json(raw)
        if not isinstance(body, dict):
            return error(request, 47001)
        if "agentid" not in body:
            return error(request, 41011)
        if body["agentid"] != app.agent_id or isinstance(body["agentid"], bool):
            return error(request, 40056)
        try:
            validate(_update_decoder.decode(raw))
        except msgspec.ValidationError as exc:
            return error(request, 40035, str(exc))
        except SchemaError as exc:
            return error(request, 40035, str(exc))
        code = state.response_codes.get(body["response_code"])
        if code is None or code.app != app.name:
            return error(request, 40035, "invalid response_code")
        del state.response_codes[body["response_code"]]  # single use
        if state.clock() - code.issued_at > 3 * _DAY:
            return error(request, 40035, "response_code older than 72 hours")
        if code.record is not None:
            code.record.card_update = body
            state.touch(code.record)
        return ok()

    return [
        Route("/cgi-bin/gettoken", gettoken, methods=["GET"]),
        Route("/cgi-bin/message/send", message_send, methods=["POST"]),
        Route("/cgi-bin/media/upload", media_upload, methods=["POST"]),
        Route("/cgi-bin/message/recall", recall, methods=["POST"]),
        Route("/cgi-bin/message/update_template_card", update_template_card, methods=["POST"]),
    ]


def _content_bytes(body: dict[str, Any], msgtype: str) -> int:
    """UTF-8 bytes of a text or markdown message's content (0 for other types)."""
    inner = body.get(msgtype) if msgtype in ("text", "markdown") else None
    content = inner.get("content") if isinstance(inner, dict) else None
    return len(content.encode()) if isinstance(content, str) else 0


def _media_ok(state: FakeState, app: FakeApp, media_id: str, msgtype: str) -> bool:
    media = state.media.get(media_id)
    return (
        media is not None
        and media.type in _MEDIA_FOR[msgtype]
        and state.apps[media.app].corp_id == app.corp_id  # shared by the corp's apps
        and state.clock() - media.created_at <= 3 * _DAY
    )


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
