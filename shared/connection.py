"""One way to reach Redis from every service and tool, whatever its topology.

``REDIS_URL`` names the server the way operators run it:

=====================================================================  ==========================
URL                                                                    topology
=====================================================================  ==========================
``redis://[[user]:password@]host:6379/0``, ``rediss://…``, ``unix://…``  one server (as before)
``redis+sentinel://[:password@]h1:26379,h2:26379/<service>[/<db>]``    a Sentinel-watched primary
``rediss+sentinel://…``                                                the same over TLS
``redis+cluster://[:password@]h1:6379,h2:6379``                        Redis Cluster
``rediss+cluster://…``                                                 the same over TLS
=====================================================================  ==========================

The password in a Sentinel URL is the data nodes' password; Sentinels that want one of their
own take ``?sentinel_password=…``. A Sentinel client asks the Sentinels for the current primary
on every (re)connection, so the services follow a failover without a restart. A cluster client
routes each command by its keys' slot; scripts and pipelines that touch several keys need them
in one slot (the key registry in ``shared/bus/names.py`` gives such keys one hash tag).

``connect`` returns a ``redis.asyncio.Redis`` for one server and for Sentinel. For a cluster it
returns a ``redis.asyncio.RedisCluster``, typed as ``Redis``: it answers the same commands the
bus uses (streams, scripts, pipelines without transactions), which the cluster tests exercise.
"""

from __future__ import annotations

from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from shared.errors import ConfigError

__all__ = ["RedisTarget", "connect", "is_cluster", "parse_redis_url", "prepare"]

Topology = Literal["standalone", "sentinel", "cluster"]
_PLAIN = ("redis://", "rediss://", "unix://")
_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


class RedisTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``REDIS_URL`` names; ``repr`` never shows the password."""

    topology: Topology
    url: str = ""  # the URL itself, for a single server
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""  # Sentinel's name of the primary
    db: int = 0
    username: str | None = None
    password: str | None = msgspec.field(default=None)
    sentinel_password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts) or "(url)"
        return f"RedisTarget({self.topology}, {hosts}, service={self.service!r}, db={self.db})"

    __str__ = __repr__


class _SentinelRedis(Redis):
    """The primary's client; closing it also closes the connections to the Sentinels."""

    watchers: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watchers is not None:
            for client in self.watchers.sentinels:
                await client.aclose()


def _bad(problem: str) -> ConfigError:
    return ConfigError("REDIS_URL", problem)


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not host:
            raise _bad(f"host list has an empty entry ({netloc!r} after the credentials)")
        if port and not port.isdigit():
            raise _bad(f"port of {host!r} must be a number")
        number = int(port) if port else default_port
        if not 0 < number < 65536:
            raise _bad(f"port of {host!r} must be 1-65535")
        hosts.append((host, number))
    return tuple(hosts)


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``REDIS_URL``; a ConfigError names the variable and the problem (never a password)."""
    if url.startswith(_PLAIN):
        return RedisTarget(topology="standalone", url=url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise _bad(
            "must start with redis://, rediss://, unix://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    topology, tls = _SCHEMES[scheme]
    # urlsplit would choke on several host:port pairs; split the credentials off by hand.
    credentials, at, location = rest.rpartition("@")
    if not at:
        credentials, location = "", rest
    parts = urlsplit("//" + location)
    netloc = location.split("/", 1)[0].split("?", 1)[0]
    username, _, password = credentials.partition(":")
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0]
    segments = [unquote(s) for s in parts.path.split("/") if s]
    common: dict[str, Any] = {
        "topology": topology,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "sentinel_password": sentinel_password,
        "tls": tls,
    }
    if topology == "cluster":
        if segments:
            raise _bad("a cluster URL takes no path (a cluster has only database 0)")
        return RedisTarget(hosts=_hosts(netloc, 6379), **common)
    if not segments or len(segments) > 2:
        raise _bad("a Sentinel URL ends with /<service-name> or /<service-name>/<db>")
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise _bad(f"database must be a number, not {db!r}")
    return RedisTarget(hosts=_hosts(netloc, 26379), service=segments[0], db=int(db), **common)


def connect(url: str, **options: Any) -> Redis:
    """A client for ``REDIS_URL``; ``options`` are redis-py connection options (timeouts…)."""
    target = parse_redis_url(url)
    if target.topology == "standalone":
        return Redis.from_url(url, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        auth["ssl"] = True
    if target.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        # redis-py's cluster client holds at most 100 connections per node by default and
        # then fails the command at once (MaxConnectionsError) instead of waiting for one: a
        # sender's sends in flight and a burst of callbacks on one node reached that. Batches
        # share a connection per node (shared.bus.pinned); this bound is for bursts.
        options.setdefault("max_connections", 1000)
        return cast("Redis", RedisCluster(startup_nodes=nodes, **auth, **options))
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    if target.tls:
        sentinel_options["ssl"] = True
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts), sentinel_kwargs=sentinel_options, **options
    )
    primary: _SentinelRedis = sentinel.master_for(
        target.service, redis_class=_SentinelRedis, db=target.db, **auth
    )
    primary.watchers = sentinel
    return primary


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` is a cluster client (its pipelines refuse EVALSHA and span slots)."""
    return isinstance(redis, RedisCluster)


async def prepare(redis: Redis) -> None:
    """Learn a cluster's slot map once, before concurrent tasks start: redis-py initializes a
    cluster client lazily, and several tasks doing it at once tear each other's connections
    down. Nothing to do for a single server or Sentinel."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
