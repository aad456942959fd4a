"""HTML for the console without a template engine: every value is escaped unless it is ``Html``.

``html("<td>{name}</td>", name=value)`` escapes ``value``; a value that is already ``Html`` (built
by this function or :func:`join`) goes in as is. So markup is only ever written in this package's
own string literals, and anything read from Redis (a message's text, a reason) is text.
"""

from __future__ import annotations

import html as _html
import json
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["Html", "age", "html", "join", "pretty_json", "stamp"]


class Html(str):
    """Markup that is safe to insert as is."""

    __slots__ = ()


def escape(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(_html.escape("" if value is None else str(value), quote=True))


def html(template: str, **values: object) -> Html:
    """``template`` (a literal of this package) with ``{name}`` fields filled in, escaped."""
    return Html(template.format(**{key: escape(value) for key, value in values.items()}))


def join(parts: Iterable[Html], sep: str = "") -> Html:
    return Html(sep.join(escape(part) for part in parts))


def stamp(unix: float | None) -> str:
    """Local time as ``YYYY-MM-DD HH:MM:SS`` (empty for None)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix)) if unix else ""


def age(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``12m 3s``, ``5h 2m``, ``3d 4h``."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86_400}d {s % 86_400 // 3600}h"


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
