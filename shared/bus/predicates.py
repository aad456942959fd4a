"""Route conditions: ``Predicate`` and the ready-made ones (text, event, event_key, sender, app).

A predicate sees the event and the handler ``Context`` (so it can test the app) and combines
with ``&``, ``|`` and ``~``. They live apart from the router so the router reads as routing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.schemas.inbound import Event, InboundEvent, TextMessage

if TYPE_CHECKING:
    from shared.bus.router import Context

__all__ = ["Predicate", "app", "event", "event_key", "sender", "text"]


class Predicate:
    """A condition on ``(event, ctx)``; combine with ``&``, ``|``, ``~``."""

    __slots__ = ("_fn", "_label")

    def __init__(self, fn: Callable[[Any, Context], bool], label: str = "") -> None:
        self._fn = fn
        self._label = label or getattr(fn, "__qualname__", "predicate")

    def __call__(self, event: InboundEvent, ctx: Context) -> bool:
        return bool(self._fn(event, ctx))

    def __and__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e, c: self(e, c) and other(e, c), f"({self} & {other})")

    def __or__(self, other: Predicate) -> Predicate:
        return Predicate(lambda e, c: self(e, c) or other(e, c), f"({self} | {other})")

    def __invert__(self) -> Predicate:
        return Predicate(lambda e, c: not self(e, c), f"~{self}")

    def __repr__(self) -> str:
        return self._label


def text(pattern: str | re.Pattern[str], flags: int = 0) -> Predicate:
    """A text message whose content contains a match of ``pattern`` (``re.search``)."""
    rx = re.compile(pattern, flags)
    return Predicate(
        lambda e, _: isinstance(e, TextMessage) and rx.search(e.content) is not None,
        f"text({rx.pattern!r})",
    )


def event(*names_: str) -> Predicate:
    """An event whose Event is one of ``names_`` (case-insensitive: WeCom mixes "LOCATION")."""
    wanted = {n.casefold() for n in names_}
    return Predicate(
        lambda e, _: isinstance(e, Event) and e.event.casefold() in wanted,
        f"event{names_!r}",
    )


def event_key(key: str | re.Pattern[str]) -> Predicate:
    """An event whose EventKey equals ``key``, or contains a match of a compiled pattern."""

    def check(e: InboundEvent, _: Context) -> bool:
        value = e.event_key if isinstance(e, Event) else None
        if value is None:
            return False
        return value == key if isinstance(key, str) else key.search(value) is not None

    label = key if isinstance(key, str) else key.pattern
    return Predicate(check, f"event_key({label!r})")


def sender(*user_ids: str) -> Predicate:
    """Sent by one of these members (FromUserName)."""
    wanted = frozenset(user_ids)
    return Predicate(lambda e, _: e.from_user in wanted, f"sender{user_ids!r}")


def app(*app_names: str) -> Predicate:
    """Received by one of these apps (names of the apps file; "default" otherwise)."""
    wanted = frozenset(app_names)
    return Predicate(lambda _, c: c.app in wanted, f"app{app_names!r}")
