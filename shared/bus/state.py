"""``State``: what a service hands its routers' lifecycle hooks and handlers (``ctx.state``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from shared.config import Settings

__all__ = ["State"]


class State:
    """What a service hands its routers' hooks and handlers: shared for the process's life.

    ``settings`` (the checked configuration), ``redis`` (the service's client) and ``environ``
    (the environment the service started with, ``.env`` applied: a behaviour's own variables)
    are always there. A startup hook may set any other attribute (``state.http = …``); reading
    one nobody set raises AttributeError naming it.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        redis: Redis | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.environ: Mapping[str, str] = dict(environ or {})
        self._redis = redis

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("this State has no Redis client (made outside a service?)")
        return self._redis

    def __setattr__(self, name: str, value: Any) -> None:  # declared so hooks may set anything
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes that are not set: say which, and where they come from.
        raise AttributeError(f"state has no {name!r}: no startup hook set it")

    def __repr__(self) -> str:  # attribute names only: values may hold secrets
        extra = sorted(k for k in vars(self) if not k.startswith("_"))
        return f"State({', '.join(extra)})"
