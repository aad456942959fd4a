"""``wecom-bus check --redis``: does this Redis keep the promises wecom-bus relies on?

Each probe asks the server itself rather than trusting a version table: XAUTOCLAIM is called
(on a group that does not exist, so nothing changes), the project's Lua scripts are loaded, and
a script is run over each set of keys that one script touches together, under the configured
``BUS_PREFIX``, so a cluster that would split them answers CROSSSLOT here rather than in
production. INFO is read rather than CONFIG where possible: managed services often refuse CONFIG.
"""

from __future__ import annotations

import importlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.commands.base import Finding
from shared.bus import names
from shared.bus.scripts import Script

__all__ = ["MIN_VERSION", "findings", "project_scripts"]

MIN_VERSION = (6, 2)  # XAUTOCLAIM and exclusive XRANGE starts
# Modules holding the project's Lua scripts (module-level Script objects).
_SCRIPT_MODULES = (
    "shared.bus.streams",
    "shared.bus.outbox",
    "shared.bus.deadletter",
    "shared.bus.delayed",
    "shared.wecom.token",
    "shared.wecom.governor",
    "services.ingress.store",
)
_PROBE = Script("return #KEYS")
_NO_GROUP = "wecom-bus-check-no-such-group"


def project_scripts() -> list[Any]:
    """Every module-level script object (``text`` and ``sha``) of the project's modules."""
    found: dict[str, Any] = {}
    for module_name in _SCRIPT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a service image without that service's extra
            continue
        for value in vars(module).values():
            if isinstance(getattr(value, "text", None), str) and hasattr(value, "sha"):
                found[value.sha] = value
    return list(found.values())


def _key_groups(prefix: str) -> dict[str, list[str]]:
    """The sets of keys one script touches together (see shared.bus.names)."""
    events, outbox = names.events(prefix), names.outbox(prefix)
    return {
        "streams": [
            events,
            names.retry(events, names.RESPONDER_GROUP),
            outbox,
            names.retry(outbox, names.SENDER_GROUP),
            names.deadletter(prefix),
        ],
        "callback dedup": [names.seen(prefix, "default", "check"), events],
        "send idempotency": [names.idempotency(prefix, "check"), outbox],
        "delayed sends": [names.delayed(prefix), names.delayed_data(prefix), outbox],
    }


def _version(info: dict[str, Any]) -> tuple[tuple[int, ...], str]:
    raw = str(info.get("redis_version", "0"))
    numbers = tuple(int(part) for part in raw.split(".")[:3] if part.isdigit())
    if info.get("server_name") == "valkey" or "valkey_version" in info:
        return numbers, f"Valkey {info.get('valkey_version', '?')} (redis_version {raw})"
    return numbers, f"Redis {raw}"


async def _server(redis: Redis, prefix: str) -> Finding:
    numbers, name = _version(await redis.info("server"))
    try:
        await redis.xautoclaim(names.events(prefix), _NO_GROUP, "check", 0, count=1)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            return Finding("redis server", "error", f"{name}: XAUTOCLAIM refused ({exc})")
    if numbers < MIN_VERSION:
        return Finding("redis server", "error", f"{name}: wecom-bus needs Redis ≥ 6.2 or Valkey")
    return Finding("redis server", "ok", f"{name}, XAUTOCLAIM supported")


async def _scripts(redis: Redis, prefix: str) -> Finding:
    scripts = project_scripts()
    try:
        for script in scripts:
            await redis.script_load(script.text)
    except ResponseError as exc:
        return Finding("redis scripts", "error", f"a script does not load: {exc}")
    for group, keys in _key_groups(prefix).items():
        try:
            await _PROBE(redis, keys)
        except RedisError as exc:
            return Finding(
                "redis scripts",
                "error",
                f"the {group} keys under BUS_PREFIX={prefix!r} cannot be used by one script "
                f"({exc}); on a cluster give the prefix a hash tag, e.g. {{{prefix}}}",
            )
    return Finding(
        "redis scripts", "ok", f"{len(scripts)} loaded; keys under BUS_PREFIX={prefix!r} usable"
    )


async def _memory(redis: Redis) -> Finding:
    policy = str((await redis.info("memory")).get("maxmemory_policy", "unknown"))
    if policy == "noeviction":
        return Finding("redis maxmemory-policy", "ok", "noeviction")
    return Finding(
        "redis maxmemory-policy",
        "error",
        f"{policy}: under memory pressure Redis would delete streams, dedup and idempotency "
        "marks; set maxmemory-policy noeviction (writes then fail loudly instead)",
    )


async def _fsync(redis: Redis) -> Finding:
    aof = int((await redis.info("persistence")).get("aof_enabled", 0))
    try:
        fsync = str((await redis.config_get("appendfsync")).get("appendfsync", "unknown"))
    except ResponseError:  # CONFIG refused (managed Redis)
        fsync = "unknown"
    if not aof:
        return Finding(
            "redis fsync",
            "warning",
            "appendonly no: a crash loses every write since the last snapshot, acknowledged "
            "callbacks included; set appendonly yes and appendfsync always for zero loss",
        )
    if fsync == "always":
        return Finding("redis fsync", "ok", "appendonly yes, appendfsync always")
    return Finding(
        "redis fsync",
        "warning",
        f"appendonly yes, appendfsync {fsync}: a crash of the server may lose about the last "
        "second of acknowledged writes; appendfsync always for zero loss",
    )


async def _topology(redis: Redis) -> Finding:
    mode = str((await redis.info("server")).get("redis_mode", "standalone"))
    replication = await redis.info("replication")
    role = str(replication.get("role", "unknown"))
    replicas = int(replication.get("connected_slaves", 0))
    text = f"{mode}, role {role}, {replicas} connected replica(s)"
    if role != "master":
        return Finding(
            "redis topology",
            "error",
            f"{text}: a replica is read-only; point REDIS_URL at the primary",
        )
    return Finding("redis topology", "ok", text)


async def findings(redis: Redis, prefix: str) -> list[Finding]:
    """One finding per promise, in the order ``wecom-bus check --redis`` prints them."""
    return [
        await _server(redis, prefix),
        await _scripts(redis, prefix),
        await _memory(redis),
        await _fsync(redis),
        await _topology(redis),
    ]
