"""The default responder: its behaviours, in matching order.

This list is the plugin list: add a module with a ``router`` and include it here (or run it
as its own group with ``wecom-bus responder --group NAME --handlers module:router``).
"""

from __future__ import annotations

from services.responder.handlers import echo, fallback, help
from shared.bus import Router

router = Router("responder")
router.include(help.help_router(router), echo.router, fallback.router)

__all__ = ["router"]
