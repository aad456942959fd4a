"""``/help`` (or 帮助): tell a member what this responder does, in words a member understands.

Each route's ``description`` is listed (by default the first line of its handler's docstring);
routes with none (audits, fallbacks) are left out. Internal handler names are never shown.
"""

from __future__ import annotations

from shared.bus import Context, Router, text
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

__all__ = ["describe", "help_router"]

HEADER = "我能做这些 / What I can do:"


def describe(top: Router) -> str:
    """The /help answer for ``top``: one line per described route, in matching order."""
    lines = [HEADER]
    lines += [f"• {route.description}" for route in top.routes if route.description]
    return "\n".join(lines)


def help_router(top: Router) -> Router:
    """A router answering /help with the routes of ``top`` (the router it is included in)."""
    router = Router("help")

    async def show_help(msg: TextMessage, ctx: Context) -> TextSend:
        return TextSend.reply_to(msg, describe(top))

    show_help.__qualname__ = show_help.__name__  # its name goes into reply ids: no "<locals>"
    router.on(
        TextMessage,
        when=text(r"^\s*(/help|帮助)\s*$"),
        description="/help 或 帮助：列出这些 / this list",
    )(show_help)
    return router
