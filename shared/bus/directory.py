"""``ctx.directory``: members and departments from a Redis copy, without a WeCom call.

The copy is kept by the ``directory`` behaviour (``services.directory``, its own consumer
group): on each ``change_contact`` event it fetches the member or department through the
sender's gateway (WeCom's events carry little more than ids) and writes it here, or deletes
it. A lookup reads one hash field; on a miss (a member who joined before the behaviour ran, or
an app without contact events) it asks the gateway once and keeps the answer. Entries are
WeCom's own JSON (user/get, department/get) without errcode and errmsg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

import msgspec
from redis.asyncio import Redis

from shared.bus import names
from shared.wecom.errors import PermanentAPIError

__all__ = ["NOT_FOUND", "Directory"]

NOT_FOUND = frozenset({60111, 60123, 40003})  # userid not found, party not found, bad userid
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class _Gateway(Protocol):
    async def get(self, path: str, **params: str | int) -> dict[str, Any]: ...


class Directory:
    """One app's view of the directory copy; ``gateway`` gives ``ctx.wecom`` when needed."""

    def __init__(
        self, redis: Redis, prefix: str, app: str, gateway: Callable[[], _Gateway]
    ) -> None:
        self.redis, self.app, self._gateway = redis, app, gateway
        self.users_key = names.directory_users(prefix, app)
        self.departments_key = names.directory_departments(prefix, app)

    async def user(self, userid: str) -> dict[str, Any] | None:
        """The member (user/get's fields), or None when WeCom does not know them."""
        raw = cast("bytes | None", await self.redis.hget(self.users_key, userid))
        if raw is not None:
            return _decode(raw)
        return await self.refresh_user(userid)

    async def department(self, department_id: int) -> dict[str, Any] | None:
        """The department (id, name, parentid, order), or None when WeCom does not know it."""
        raw = cast("bytes | None", await self.redis.hget(self.departments_key, department_id))
        if raw is not None:
            return _decode(raw)
        return await self.refresh_department(department_id)

    async def refresh_user(self, userid: str) -> dict[str, Any] | None:
        """Fetch the member through the gateway and keep it (gone at WeCom: forgotten)."""
        answer = await self._fetch("user/get", userid=userid)
        if answer is None:
            await self.forget_user(userid)
            return None
        await self.redis.hset(self.users_key, userid, msgspec.json.encode(answer))
        return answer

    async def refresh_department(self, department_id: int) -> dict[str, Any] | None:
        answer = await self._fetch("department/get", id=department_id)
        department = answer.get("department") if answer else None
        if not isinstance(department, dict):
            await self.forget_department(department_id)
            return None
        await self.redis.hset(self.departments_key, department_id, msgspec.json.encode(department))
        return department

    async def forget_user(self, userid: str) -> None:
        await self.redis.hdel(self.users_key, userid)

    async def forget_department(self, department_id: int) -> None:
        await self.redis.hdel(self.departments_key, str(department_id))

    async def _fetch(self, path: str, **params: str | int) -> dict[str, Any] | None:
        try:
            answer = await self._gateway().get(path, **params)
        except PermanentAPIError as exc:
            if exc.errcode in NOT_FOUND:
                return None
            raise
        return {k: v for k, v in answer.items() if k not in ("errcode", "errmsg")}
