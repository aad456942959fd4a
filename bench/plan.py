"""How long and how hard each measurement runs (full and ``--quick``); the run's shared state."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.callbacks import Credentials
from bench.procs import Cores

__all__ = ["FULL", "QUICK", "Context", "Plan", "machine"]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    warmup: float  # seconds of load before measuring
    duration: float  # seconds measured per ingress run
    rounds: int  # the four receivers are compared in this many rounds, best kept
    connections: int  # fixed concurrency of the closed-loop runs
    requests: int  # pre-built callbacks for every ingress run together
    e2e_rates: tuple[int, ...]
    e2e_duration: float
    e2e_members: int
    consumer_entries: int  # entries pre-filled for each responder/sender drain
    gettoken_senders: int
    gettoken_sends: int
    roundtrip_callbacks: int
    topology_rate: int  # end to end on each Redis topology: callbacks a second …
    topology_duration: float  # … for this many seconds


FULL = Plan(
    warmup=0.5,
    duration=3.0,
    rounds=3,
    connections=32,
    requests=40_000,
    e2e_rates=(100, 500, 1000),
    e2e_duration=5.0,
    e2e_members=2000,
    consumer_entries=3000,
    gettoken_senders=3,
    gettoken_sends=300,
    roundtrip_callbacks=500,
    topology_rate=300,
    topology_duration=3.0,
)

QUICK = Plan(
    warmup=0.3,
    duration=1.0,
    rounds=1,
    connections=32,
    requests=15_000,
    e2e_rates=(100, 500),
    e2e_duration=2.0,
    e2e_members=2000,
    consumer_entries=1000,
    gettoken_senders=3,
    gettoken_sends=300,
    roundtrip_callbacks=200,
    topology_rate=300,
    topology_duration=2.0,
)


@dataclass
class Context:
    """What every section shares: the plan, the app's credentials, files, cores, results."""

    plan: Plan
    creds: Credentials
    workdir: Path
    cores: Cores
    requests_file: Path
    results: dict[str, Any] = field(default_factory=dict)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "allowed_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }
