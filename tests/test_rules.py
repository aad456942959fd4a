"""The default responder's reply rule on real sample texts."""

from __future__ import annotations

import pytest

from services.responder.rules import echo_reply


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("你好吗?", "你好!"),
        ("在吗？", "在！"),
        ("吃饭了吗？？", "吃饭了！！"),
        ("how are you?", "how are you!"),
        ("Is it 3? Or 4?", "Is it 3! Or 4!"),
        ("好吗?好吗？", "好!好！"),
        ("没有问号", "没有问号"),
        ("吗吗吗", None),
        ("吗 ", None),
        ("", None),
        ("   ", None),
        ("你好吗😀?", "你好😀!"),
        ("👍", "👍"),
        ("嘛？", "嘛！"),
        ("吗?", "!"),
        ("line1吗\nline2?", "line1\nline2!"),
        ("¿qué?", "¿qué!"),
    ],
)
def test_reply_rule(text: str, reply: str | None) -> None:
    assert echo_reply(text) == reply
