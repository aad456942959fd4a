"""The uvicorn options every HTTP server here shares: ``uvicorn_options(**own)``.

Logging is the project's (``shared.logs``, configured before the server starts), so uvicorn
configures none and writes no line per request; answers carry no ``server`` header. Each server
adds what is its own (proxy headers, timeouts, lifespan) at its call site.
"""

from __future__ import annotations

from typing import Any

__all__ = ["uvicorn_options"]

SHARED: dict[str, Any] = {"access_log": False, "log_config": None, "server_header": False}


def uvicorn_options(**own: Any) -> dict[str, Any]:
    """Keywords for ``uvicorn.run`` or ``uvicorn.Config``: the shared ones, then ``own``."""
    return {**SHARED, **own}
