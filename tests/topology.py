"""Real Redis topologies for tests, from the same binary as the embedded server.

``SentinelSet``: a primary, replicas and Sentinels (``redis-server --sentinel``), with
``kill_primary()`` for failover tests. ``Cluster``: nodes joined with CLUSTER MEET and given
slots with CLUSTER ADDSLOTSRANGE. Every process is a child tied to the test run, on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from devkit.embedded_redis import EmbeddedRedis, die_with_parent, free_port

__all__ = ["Cluster", "Node", "SentinelSet"]

SERVICE = "wecom-primary"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout}s")


class Node(EmbeddedRedis):
    """An embedded server with extra command-line options (replication, cluster mode)."""

    def __init__(
        self, *, extra: Sequence[str] = (), appendfsync: str = "always", binary: Path | None = None
    ) -> None:
        super().__init__(appendfsync=appendfsync, binary=binary)
        self.extra = list(extra)

    def _argv(self) -> list[str]:
        return [*super()._argv(), *self.extra]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class _Sentinel:
    def __init__(self, binary: Path, primary_port: int, data_dir: Path) -> None:
        self.port = free_port()
        self.conf = data_dir / f"sentinel-{self.port}.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {data_dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process = subprocess.Popen(
            [str(binary), str(self.conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            process_group=0,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Topology:
    """Start on entering, stop on leaving (and when starting fails half-way)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SentinelSet(_Topology):
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels with quorum 2."""

    def __init__(self, *, replicas: int = 2, sentinels: int = 3) -> None:
        # A replica that must fully resync with the promoted primary starts at once (the
        # default waits 5 s for more replicas to share the transfer).
        self.tuning = ["--repl-diskless-sync-delay", "0"]
        self.primary = Node(extra=self.tuning)
        self.replicas: list[Node] = []
        self.sentinels: list[_Sentinel] = []
        self.n_replicas, self.n_sentinels = replicas, sentinels

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def start(self) -> SentinelSet:
        self.primary.start()
        for _ in range(self.n_replicas):
            node = Node(extra=[*self.tuning, "--replicaof", "127.0.0.1", str(self.primary.port)])
            node.start()
            self.replicas.append(node)
        primary = self.primary.client()
        wait_for(
            lambda: primary.info("replication")["connected_slaves"] == self.n_replicas,
            20,
            "replicas connected",
        )
        # The first WAIT after a full sync can take seconds; pay it here, not in the test.
        primary.set("topology:warm-up", 1)
        primary.execute_command("WAIT", self.n_replicas, 20_000)  # type: ignore[no-untyped-call]
        primary.delete("topology:warm-up")
        for _ in range(self.n_sentinels):
            self.sentinels.append(
                _Sentinel(self.primary.binary, self.primary.port, self.primary.data_dir)
            )
        for sentinel in self.sentinels:
            client = sentinel.client()
            wait_for(
                lambda c=client: len(c.sentinel_sentinels(SERVICE)) == self.n_sentinels - 1,  # type: ignore[misc]
                30,
                "sentinels discovered each other",
            )
        return self

    def primary_port(self) -> int:
        address = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        assert isinstance(address, tuple), address
        return int(address[1])

    def replication(self) -> list[str]:
        """Each live node's replication state, for a failing test's message."""
        found = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with contextlib.suppress(redis.RedisError):
                info = node.client().info("replication")
                keys = ("role", "connected_slaves", "master_port", "master_link_status")
                found.append(f"{node.port}: " + ", ".join(f"{k}={info.get(k)}" for k in keys))
        return found

    def kill_primary(self) -> Node:
        """SIGKILL the current primary; returns it (``start()`` brings it back as it was)."""
        port = self.primary_port()
        victim = next(n for n in self.nodes if n.port == port)
        victim.kill()
        return victim

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        def moved() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            return bool(redis.Redis(port=port).info("replication")["role"] == "master")

        wait_for(moved, timeout, "a replica promoted")
        return self.primary_port()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()


class Cluster(_Topology):
    """``size`` primaries sharing the 16384 slots evenly, each with ``replicas`` replicas."""

    def __init__(self, size: int = 3, *, replicas: int = 0, binary: Path | None = None) -> None:
        self.binary = binary
        self.nodes: list[Node] = [self._node() for _ in range(size)]  # the primaries
        self.replicas: dict[int, list[Node]] = {  # by primary port
            n.port: [self._node() for _ in range(replicas)] for n in self.nodes
        }

    def _node(self) -> Node:
        bus = free_port()  # explicit: port + 10000 overflows for high ports
        node = Node(
            extra=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", "2000",
            ],
            appendfsync="everysec",
            binary=self.binary,
        )  # fmt: skip
        node.bus_port = bus  # type: ignore[attr-defined]
        return node

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def all_nodes(self) -> list[Node]:
        return [*self.nodes, *(r for group in self.replicas.values() for r in group)]

    def start(self) -> Cluster:
        for node in self.all_nodes():
            node.start()
        step = 16384 // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = 16383 if i == len(self.nodes) - 1 else (i + 1) * step - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)  # type: ignore[no-untyped-call]
        first = self.nodes[0].client()
        for node in self.all_nodes()[1:]:
            first.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                node.port,
                node.bus_port,  # type: ignore[attr-defined]
            )
        total = len(self.all_nodes())
        for node in self.all_nodes():
            client = node.client()
            wait_for(
                lambda c=client: (
                    c.cluster("info")["cluster_state"] == "ok"  # type: ignore[misc]
                    and int(c.cluster("info")["cluster_known_nodes"]) == total
                ),
                30,
                f"node {node.port} sees an ok cluster",
            )
        for primary in self.nodes:
            self._attach(primary, self.replicas[primary.port])
        return self

    def _attach(self, primary: Node, replicas: list[Node]) -> None:
        if not replicas:
            return
        node_id = primary.client().execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
        for replica in replicas:
            replica.client().execute_command("CLUSTER", "REPLICATE", node_id)  # type: ignore[no-untyped-call]
        client = primary.client()
        wait_for(
            lambda: client.info("replication")["connected_slaves"] == len(replicas),
            30,
            f"replicas of {primary.port} connected",
        )
        # The first WAIT after a full sync can take seconds; pay it here, not in the test.
        key = next(k for i in range(1000) if self.node_of(k := f"warm-up:{i}") is primary)
        client.set(key, 1)
        client.execute_command("WAIT", len(replicas), 20_000)  # type: ignore[no-untyped-call]
        client.delete(key)

    def node_of(self, key: str) -> Node:
        """The node serving ``key``'s slot."""
        client = self.nodes[0].client()
        slot = int(client.cluster("keyslot", key))
        for start, end, (_, port, *_rest), *_replicas in client.cluster("slots"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(key)

    def stop(self) -> None:
        for node in self.all_nodes():
            node.stop()
