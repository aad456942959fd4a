"""The fake's directory, media download and sign-in reads, answering as WeCom's pages describe.

user/get (读取成员, path/90196), user/simplelist (90200), user/list_id (96067, POST),
department/list, department/simplelist, department/get (90208, 95350, 95351), tag/list, tag/get
(90216, 90213), media/get (获取临时素材, 90254: the file itself, or errcode JSON), auth/getuserinfo
(91023; a code of the form ``code-<userid>`` stands for a member's sign-in). Every API the fake
does not know answers 48001 (api 未授权) — UNCONFIRMED what WeCom answers for a path it does not
have; a refusal either way, never a success.

Members' names are their userids capitalised unless ``FakeConfig.member_names`` says otherwise;
department 1 is "Head Office" unless ``party_names`` says otherwise.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.fakewecom.answers import ok
from devkit.fakewecom.api import WeComRefusal, _state, _token_app, parse_json
from devkit.fakewecom.state import FakeApp, FakeState

__all__ = ["ROUTES", "member"]

_DAY = 86_400


def member(state: FakeState, userid: str) -> dict[str, Any]:
    """user/get's answer fields for one member of the fake."""
    parties = sorted(pid for pid, members in state.parties.items() if userid in members) or [1]
    return {
        "userid": userid,
        "name": state.member_name(userid),
        "department": parties,
        "main_department": parties[0],
        "order": [0] * len(parties),
        "position": "",
        "status": 1,
        "isleader": 0,
        "is_leader_in_dept": [0] * len(parties),
        "enable": 1,
    }


def _department(state: FakeState, pid: int) -> dict[str, Any]:
    return {"id": pid, "name": state.party_name(pid), "parentid": 0 if pid == 1 else 1, "order": 0}


def _subtree(state: FakeState, raw: str) -> list[int]:
    if not raw:
        return sorted(state.parties)
    pid = int(raw) if raw.isdigit() else -1
    if pid not in state.parties:
        raise WeComRefusal(60123)  # invalid party id
    return [pid] + ([p for p in sorted(state.parties) if p != pid] if pid == 1 else [])


async def user_get(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    userid = request.query_params.get("userid", "").lower()
    if not userid:
        raise WeComRefusal(41009)  # missing userid
    if userid not in state.member_set:
        raise WeComRefusal(60111)  # userid not found
    return ok(**member(state, userid))


async def user_simplelist(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    raw = request.query_params.get("department_id", "1")
    pid = int(raw) if raw.isdigit() else -1
    if pid not in state.parties:
        raise WeComRefusal(60123)
    users = state.members if pid == 1 else state.parties[pid]
    return ok(
        userlist=[
            {
                "userid": u,
                "name": state.member_name(u),
                "department": member(state, u)["department"],
            }
            for u in users
        ]
    )


async def user_list_id(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise WeComRefusal(47001)
    limit = body.get("limit", 10000)
    start = int(body["cursor"]) if str(body.get("cursor", "")).isdigit() else 0
    if not isinstance(limit, int) or not 1 <= limit <= 10000:
        raise WeComRefusal(40035, "limit must be 1 to 10000")
    page = state.members[start : start + limit]
    rows = [{"userid": u, "department": member(state, u)["main_department"]} for u in page]
    more = start + limit < len(state.members)
    return ok(next_cursor=str(start + limit) if more else "", dept_user=rows)


async def department_list(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    ids = _subtree(state, request.query_params.get("id", ""))
    return ok(department=[_department(state, pid) for pid in ids])


async def department_simplelist(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    ids = _subtree(state, request.query_params.get("id", ""))
    return ok(
        department_id=[{k: v for k, v in _department(state, p).items() if k != "name"} for p in ids]
    )


async def department_get(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    raw = request.query_params.get("id", "")
    if not raw.isdigit() or int(raw) not in state.parties:
        raise WeComRefusal(60123)
    return ok(department=_department(state, int(raw)))


async def tag_list(request: Request) -> Response:
    _token_app(request)
    tags = sorted(_state(request).tags)
    return ok(taglist=[{"tagid": t, "tagname": f"tag{t}"} for t in tags])


async def tag_get(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    raw = request.query_params.get("tagid", "")
    if not raw.isdigit() or int(raw) not in state.tags:
        raise WeComRefusal(40068)  # invalid tagid
    users = state.tags[int(raw)]
    return ok(
        tagname=f"tag{raw}",
        userlist=[{"userid": u, "name": state.member_name(u)} for u in users],
        partylist=[],
    )


async def media_get(request: Request) -> Response:
    """The file, with its type and name (as WeCom: Content-disposition with the filename)."""
    app: FakeApp = _token_app(request)
    state = _state(request)
    media = state.media.get(request.query_params.get("media_id", ""))
    if (
        media is None
        or state.apps[media.app].corp_id != app.corp_id
        or state.clock() - media.created_at > 3 * _DAY
    ):
        raise WeComRefusal(40007)
    disposition = f'attachment; filename="{quote(media.filename)}"'
    headers = {"Content-disposition": disposition, "Cache-Control": "no-cache, must-revalidate"}
    return Response(media.content, media_type=media.content_type, headers=headers)


async def getuserinfo(request: Request) -> Response:
    _token_app(request)
    state = _state(request)
    code = request.query_params.get("code", "")
    userid = code.removeprefix("code-")
    if not code.startswith("code-") or userid not in state.member_set:
        raise WeComRefusal(40029)  # invalid code
    return ok(userid=userid, user_ticket="")


async def unknown(request: Request) -> Response:
    """Any API the fake does not have: refused (token checked first, as WeCom does)."""
    _token_app(request)
    raise WeComRefusal(48001)


ROUTES = [
    Route("/cgi-bin/user/get", user_get, methods=["GET"]),
    Route("/cgi-bin/user/simplelist", user_simplelist, methods=["GET"]),
    Route("/cgi-bin/user/list_id", user_list_id, methods=["POST"]),
    Route("/cgi-bin/department/list", department_list, methods=["GET"]),
    Route("/cgi-bin/department/simplelist", department_simplelist, methods=["GET"]),
    Route("/cgi-bin/department/get", department_get, methods=["GET"]),
    Route("/cgi-bin/tag/list", tag_list, methods=["GET"]),
    Route("/cgi-bin/tag/get", tag_get, methods=["GET"]),
    Route("/cgi-bin/media/get", media_get, methods=["GET"]),
    Route("/cgi-bin/auth/getuserinfo", getuserinfo, methods=["GET"]),
]
# Last, after every known route (app.py): whatever else is under /cgi-bin/.
UNKNOWN = Route("/cgi-bin/{path:path}", unknown, methods=["GET", "POST"])
