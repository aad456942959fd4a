"""``/help`` (or 帮助): list the behaviours this responder runs, from their docstrings."""

from __future__ import annotations

from shared.bus import Context, Router, text
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

router = Router("help")


def describe(top: Router) -> str:
    lines = ["我能做这些 / What I do:"]
    for route in top.routes:
        doc = (route.handler.__doc__ or "").strip().splitlines()
        lines.append(f"• {route.name}: {doc[0] if doc else route.event_type.__name__}")
    return "\n".join(lines)


def help_router(top: Router) -> Router:
    """A router answering /help with the routes of ``top`` (the router it is included in)."""

    @router.on(TextMessage, when=text(r"^\s*(/help|帮助)\s*$"))
    async def show_help(msg: TextMessage, ctx: Context) -> TextSend:
        """/help or 帮助: this list."""
        return TextSend.reply_to(msg, describe(top))

    return router
