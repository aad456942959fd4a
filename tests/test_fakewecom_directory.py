"""The fake WeCom's directory, media and sign-in reads, and its refusal of unknown APIs."""

from __future__ import annotations

from typing import Any

from devkit.fakewecom import FakeConfig
from tests.inprocess_wecom import InProcessWeCom


async def get(fake: InProcessWeCom, api: str, **params: Any) -> dict[str, Any]:
    async with fake.client() as http:
        answer = await http.get(f"/cgi-bin/{api}", params={"access_token": fake.token(), **params})
    body: dict[str, Any] = answer.json()
    return body


async def test_members_departments_and_tags() -> None:
    fake = InProcessWeCom(parties={1: ("alice", "bob"), 2: ("bob",)}, tags={5: ("alice",)})
    fake.state.config = FakeConfig(
        apps=fake.state.config.apps, party_names={2: "研发"}, member_names={"bob": "Bob Wang"}
    )
    bob = await get(fake, "user/get", userid="bob")
    assert (bob["name"], bob["department"], bob["main_department"]) == ("Bob Wang", [1, 2], 1)
    assert (await get(fake, "user/get", userid="nobody"))["errcode"] == 60111
    assert (await get(fake, "user/get"))["errcode"] == 41009
    names = [d["name"] for d in (await get(fake, "department/list"))["department"]]
    assert names == ["Head Office", "研发"]
    assert (await get(fake, "department/get", id=2))["department"]["parentid"] == 1
    assert (await get(fake, "department/get", id=9))["errcode"] == 60123
    listed = await get(fake, "user/simplelist", department_id=2)
    assert [u["userid"] for u in listed["userlist"]] == ["bob"]
    assert (await get(fake, "department/simplelist"))["department_id"][0] == {
        "id": 1,
        "parentid": 0,
        "order": 0,
    }
    assert (await get(fake, "tag/list"))["taglist"] == [{"tagid": 5, "tagname": "tag5"}]
    assert [u["userid"] for u in (await get(fake, "tag/get", tagid=5))["userlist"]] == ["alice"]
    assert (await get(fake, "auth/getuserinfo", code="code-alice"))["userid"] == "alice"
    assert (await get(fake, "auth/getuserinfo", code="forged"))["errcode"] == 40029


async def test_unknown_apis_are_refused_after_the_token_check() -> None:
    fake = InProcessWeCom()
    assert (await get(fake, "user/delete", userid="alice"))["errcode"] == 48001
    async with fake.client() as http:
        missing = (await http.get("/cgi-bin/user/delete")).json()
    assert missing["errcode"] == 41001
    assert fake.state.api_calls["user/delete"] == 2
