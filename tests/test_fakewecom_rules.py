"""The fake WeCom's own table of WeCom's documented rules: what it refuses, with which errcode.

The fake is the referee the project's validators are tested against, so it must not borrow them;
each case is at a documented boundary. Run in-process (``fake_wecom``): the same app the
servers in test_fakewecom.py run.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess_wecom import InProcessWeCom


def text(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"touser": "alice", "msgtype": "text", "agentid": 1000002, **extra} | {
        "text": {"content": content}
    }


FAKE_DIR = Path(__file__).resolve().parents[1] / "devkit" / "fakewecom"
CJK_2048 = "好" * 682 + "ab"  # 2046 + 2 bytes of UTF-8: exactly WeCom's 2048


def test_the_fake_does_not_borrow_the_projects_validators() -> None:
    # A wrong limit in shared/schemas must not be wrong in the referee too.
    for module in FAKE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("shared.schemas"), module.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("shared.schemas") for a in node.names)


def card(**fields: Any) -> dict[str, Any]:
    return {
        "touser": "alice",
        "msgtype": "template_card",
        "agentid": 1000002,
        "template_card": fields,
    }


def article(**fields: Any) -> dict[str, Any]:
    return {"title": "t", "url": "https://example.com", **fields}


def news(*articles: dict[str, Any]) -> dict[str, Any]:
    return {
        "touser": "alice",
        "msgtype": "news",
        "agentid": 1000002,
        "news": {"articles": list(articles)},
    }


def textcard(**fields: Any) -> dict[str, Any]:
    return {
        "touser": "alice",
        "msgtype": "textcard",
        "agentid": 1000002,
        "textcard": {"title": "t", "description": "d", "url": "https://x.cn", **fields},
    }


ACTION = {"type": 1, "url": "https://example.com"}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (text(content=CJK_2048), 0),
        (text(content=CJK_2048 + "c"), 45002),  # 2049 bytes
        (text(content="😀" * 512), 0),  # 4-byte characters: 2048 bytes
        ({**text(), "msgtype": "markdown", "markdown": {"content": "x" * 2049}}, 45002),
        ({**text(), "msgtype": "markdown", "markdown": {"content": ""}}, 44004),
        ({**text(), "text": None}, 40035),
        (textcard(title="t" * 128), 0),
        (textcard(title="t" * 129), 45002),
        (textcard(title=""), 41016),
        (textcard(description=""), 41033),
        (textcard(description="d" * 513), 45002),
        (textcard(btntxt="更多详情啊"), 45002),  # at most 4 characters
        (news(*[article()] * 8), 0),
        (news(*[article()] * 9), 45008),
        (news(), 40035),
        (news(article(title="")), 41016),
        (text(touser="|".join(["alice"] * 1000)), 0),
        (text(touser="|".join(["alice"] * 1001)), 40032),
        (text(toparty="|".join(["1"] * 101)), 40032),
        (text(safe=2), 40035),  # 2 only for mpnews
        (text(enable_duplicate_check=1, duplicate_check_interval=4 * 3600 + 1), 40035),
        (card(card_type="text_notice", main_title={"title": "x"}), 40035),  # no card_action
        (card(card_type="text_notice", card_action=ACTION), 0),
        (card(card_type="button_interaction", button_list=[{"text": "y", "key": "y"}]), 40035),
        (card(card_type="vote_interaction", task_id="t1", checkbox={"option_list": []}), 40035),
        (card(card_type="multiple_interaction", task_id="t2", submit_button={"text": "ok"}), 0),
        (card(card_type="stamp_notice"), 40035),
        (
            {
                "touser": "alice",
                "msgtype": "miniprogram_notice",
                "miniprogram_notice": {"appid": "wx1", "title": "会议提醒"},
            },
            0,
        ),
    ],
)
async def test_the_fake_refuses_what_wecoms_documentation_refuses(
    fake_wecom: InProcessWeCom, body: Any, errcode: int
) -> None:
    # Checked in-process: the same app as the server above, through its own rules table.
    async with fake_wecom.client() as http:
        r = await http.post(
            "/cgi-bin/message/send",
            params={"access_token": fake_wecom.token()},
            content=json.dumps(body, ensure_ascii=False),
        )
    answer = r.json()
    assert r.status_code == 200 and answer["errcode"] == errcode, answer
    [record] = fake_wecom.sends
    assert record.status == ("rejected" if errcode else "delivered")
    if errcode:
        assert f"e={errcode}" in answer["errmsg"] and not record.delivered
