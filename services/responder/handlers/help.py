"""``/help`` (or 帮助): list the behaviours this responder runs, from their docstrings."""

from __future__ import annotations

from shared.bus import Context, Router, text
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

router = Router("help")
_top: list[Router] = [router]  # the router whose routes /help lists; set by lists()


def lists(top: Router) -> Router:
    """This router, answering /help with the routes of ``top`` (the router it is included in)."""
    _top[0] = top
    return router


def describe(top: Router) -> str:
    lines = ["我能做这些 / What I do:"]
    for route in top.routes:
        doc = (route.handler.__doc__ or "").strip().splitlines()
        lines.append(f"• {route.name}: {doc[0] if doc else route.event_type.__name__}")
    return "\n".join(lines)


@router.on(TextMessage, when=text(r"^\s*(/help|帮助)\s*$"))
async def show_help(msg: TextMessage, ctx: Context) -> TextSend:
    """/help or 帮助: this list."""
    return TextSend.reply_to(msg, describe(_top[0]))
