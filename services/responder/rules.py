"""The original app's reply rule, kept as a pure function so it can be read and tested alone."""

from __future__ import annotations

__all__ = ["echo_reply"]

_TABLE = str.maketrans({"吗": None, "?": "!", "？": "！"})


def echo_reply(content: str) -> str | None:
    """Remove every "吗", turn "?" into "!" and "？" into "！"; None when nothing is left to say.

    WeCom refuses an empty or blank text (errcode 44004), so such a reply is not sent at all.
    """
    reply = content.translate(_TABLE)
    return reply if reply.strip() else None
