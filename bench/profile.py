"""``python -m bench profile``: py-spy samples the ingress under load and names the top costs.

The ingress runs pinned to the server core with Redis and the generator on the load core, at the
concurrency of the main run; py-spy (pinned to the load core too) samples it for ``--seconds``
after a one-second warm-up. Idle time (the event loop waiting in epoll) is not sampled, so every
share below is a share of the CPU the ingress used. The summary, and the collapsed stacks for a
flame graph (``flamegraph.pl`` or speedscope import), go to ``bench/results-profile.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.callbacks import Credentials, callback_requests, save_requests
from bench.ingress import summary
from bench.loadgen import LoadConfig, LoadResult, run_load
from bench.plan import FULL

__all__ = ["profile", "summarize"]

# Inclusive shares worth a line each: the steps of the POST path, then the libraries under them.
STEPS = {
    "Receiver.__call__ (services/ingress/callback.py)": "the POST receiver, all of it",
    "_one (services/ingress/callback.py)": "  query parameters",
    "_check_timestamp (services/ingress/callback.py)": "  timestamp check (+ skew histogram)",
    "Receiver._read_body (services/ingress/callback.py)": "  read body",
    "CallbackCrypto.decrypt_callback (shared/protocol/crypto.py)": "  decrypt_callback",
    "parse_envelope (shared/protocol/parser.py)": "    envelope XML",
    "CallbackCrypto.verify (shared/protocol/crypto.py)": "    signature",
    "CallbackCrypto.decrypt (shared/protocol/crypto.py)": "    AES + checks",
    "read_message (shared/protocol/parser.py)": "  read_message (XML → event + raw)",
    "dedup_key (shared/schemas/inbound.py)": "  dedup key",
    "encode_envelope (shared/schemas/envelope.py)": "  encode_envelope",
    "Store.once (services/ingress/store.py)": "  queue the store",
    "Store._send (services/ingress/store.py)": "  dedup + XADD pipeline (per tick)",
    "Histogram.observe (prometheus_client/metrics.py)": "  prometheus Histogram.observe",
}
GROUPS = (
    ("redis/", "redis-py"),
    ("prometheus_client/", "prometheus_client"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("httpx_aiohttp/", "httpx-aiohttp"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "yarl"),
    ("multidict/", "multidict"),
    ("anyio/", "anyio"),
    ("h11/", "h11"),
    ("importlib", "importlib (imports at run time)"),
    ("shared/protocol/", "shared.protocol"),
    ("shared/", "shared (other)"),
    ("services/", "services"),
    ("asyncio/", "asyncio"),
    ("msgspec", "msgspec"),
    ("Crypto/", "pycryptodome"),
    ("logging/", "logging"),
)


_CHECKOUT = f"{Path(__file__).resolve().parents[1]}/"  # this checkout, wherever it is
MISSING = (
    "py-spy is not installed (the bench extra): run `make bench` once, "
    "or .venv/bin/python -m pip install -e '.[bench]'"
)


def _py_spy() -> str | None:
    """py-spy on PATH or beside this interpreter (the venv's bin/), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if os.access(beside, os.X_OK) else None)


def _frame_key(frame: str) -> str:
    """'f (/x/site-packages/redis/client.py)' → 'f (redis/client.py)': paths from their package."""
    name, _, path = frame.partition(" (")
    path = path.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", _CHECKOUT):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1] if "/" in path else path
            break
    else:
        for root in ("services/", "shared/", "bench/"):
            if root in path:
                path = path[path.index(root) :]
                break
    return f"{name} ({path})" if path else name


def _group(frame: str) -> str:
    for marker, name in GROUPS:
        if marker in frame:
            return name
    return "other (interpreter, uvloop, stdlib)"


def summarize(collapsed: str, top: int = 20) -> dict[str, Any]:
    """Self and inclusive shares from py-spy's raw (collapsed) output."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        groups[_group(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "self_top": [(f, share(n)) for f, n in own.most_common(top)],
        "inclusive_top": [
            (f, share(n))
            for f, n in inclusive.most_common(4 * top)
            if n < 0.99 * total  # what everything runs under (main, the event loop) says nothing
        ][:top],
        "by_library_self": [(g, share(n)) for g, n in groups.most_common()],
        "steps": [(label, share(inclusive[key])) for key, label in STEPS.items()],
    }


def _print(report: dict[str, Any], headline: str, steps: bool) -> None:
    print(f"{headline}; {report['samples']} samples")
    if steps:
        handler = dict(report["steps"]).get(STEPS[next(iter(STEPS))], 0.0)
        print("\nPOST /callback, inclusive share of the ingress's CPU")
        print(f"  {'uvicorn + Starlette around the handler':<44} {100 - handler:5.1f} %")
        for label, pct in report["steps"]:
            print(f"  {label:<44} {pct:5.1f} %")
    print("\nself time by library")
    for name, pct in report["by_library_self"]:
        print(f"  {name:<44} {pct:5.1f} %")
    print("\ntop functions, self time")
    for frame, pct in report["self_top"]:
        print(f"  {pct:5.1f} %  {frame}")
    print("\ntop functions, inclusive")
    for frame, pct in report["inclusive_top"]:
        print(f"  {pct:5.1f} %  {frame}")


def _spy(
    pid: int,
    seconds: float,
    rate: int,
    out: Path,
    cpus: list[int] | None,
    *,
    nonblocking: bool = False,
) -> str:
    """py-spy record on ``pid`` (itself pinned to ``cpus``); the collapsed stacks, or raise.
    ``nonblocking``: never pause the process (less exact stacks, undisturbed timing)."""
    spy = _py_spy()
    if spy is None:
        raise RuntimeError(MISSING)
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate), "--nolineno", "--format", "raw", "--output", str(out)]
    argv += ["--nonblocking"] if nonblocking else []
    done = subprocess.run(
        argv,
        capture_output=True,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr.decode(errors='replace')[-800:]}")
    return out.read_text()


def _ingress(args: argparse.Namespace, workdir: Path) -> tuple[str, str, dict[str, Any]]:
    cores = procs.cores()
    creds = Credentials.generate()
    rate_guess = 4000  # callbacks a second, generously: each is sent at most once
    file = workdir / "callbacks.pkl"
    save_requests(callback_requests(creds, int(rate_guess * (args.seconds + 2))), file)
    result: list[LoadResult] = []
    with procs.redis_server("everysec", cores.load) as rds:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
        env.update(creds.env(), REDIS_URL=rds.url)
        with procs.server("ingress", env, workdir, cpus=cores.server) as srv:
            config = LoadConfig(
                port=srv.port,
                requests_file=str(file),
                connections=FULL.connections,
                warmup=1.0,
                duration=args.seconds + 1.0,
                repeat=False,
                cpus=cores.load,
            )
            loader = threading.Thread(target=lambda: result.append(run_load(config)))
            loader.start()
            threading.Event().wait(1.0)
            try:
                collapsed = _spy(
                    srv.process.pid, args.seconds, args.rate, workdir / "c.txt", cores.load
                )
            finally:
                loader.join()
    headline = f"ingress under py-spy: {result[0].rps:.0f} callbacks/s"
    return collapsed, headline, summary(result[0])


def _consumer(
    args: argparse.Namespace, workdir: Path, service: str
) -> tuple[str, str, dict[str, Any]]:
    from bench.pipeline import consumer_system, fill_for

    with consumer_system(workdir, service) as (system, rds):
        [pid] = [p.pid for name, p in system.stack.children if name == service]
        count, took = fill_for(system, rds, service, int(1200 * args.seconds))
        collapsed = _spy(pid, args.seconds, args.rate, workdir / "c.txt", None)
    headline = f"{service} under py-spy: {count} entries pre-filled (filled in {took:.2f} s)"
    return collapsed, headline, {"entries": count}


def _e2e(args: argparse.Namespace, workdir: Path) -> dict[str, tuple[str, str]]:
    """The whole system at ``--e2e-rate`` callbacks a second (open loop, members spread), each of
    ingress, responder and sender sampled at once: {service: (collapsed, headline)}."""
    from bench.pipeline import ALL, profiled_system

    members = 4000  # far below 30 messages a minute each
    with profiled_system(workdir, ALL, members) as (system, _):
        file = workdir / "e2e.pkl"
        count = int(args.e2e_rate * (args.seconds + 3))
        creds = Credentials.from_env(system.env)
        save_requests(callback_requests(creds, count, member_count=members), file)
        config = LoadConfig(
            port=system.ports["ingress"],
            requests_file=str(file),
            mode="open",
            connections=64,
            rate=float(args.e2e_rate),
            warmup=0.0,
            duration=args.seconds + 3,
            repeat=False,
        )
        result: list[LoadResult] = []
        loader = threading.Thread(target=lambda: result.append(run_load(config)))
        loader.start()
        threading.Event().wait(1.5)
        pids = {name: p.pid for name, p in system.stack.children if name != "fake-wecom"}
        spied: dict[str, str] = {}

        def spy(name: str) -> None:
            out = workdir / f"{name}.txt"
            spied[name] = _spy(pids[name], args.seconds, args.rate, out, None, nonblocking=True)

        spies = [threading.Thread(target=spy, args=(name,)) for name in pids]
        for thread in spies:
            thread.start()
        for thread in [*spies, loader]:
            thread.join()
    load = f"{result[0].sent} callbacks at {args.e2e_rate}/s" if result else "load failed"
    return {name: (spied[name], f"{name} under py-spy, end to end, {load}") for name in spied}


def _profile_e2e(args: argparse.Namespace, workdir: Path) -> int:
    document: dict[str, Any] = {"target": "e2e", "services": {}}
    for name, (collapsed, headline) in _e2e(args, workdir).items():
        report = summarize(collapsed)
        _print(report, headline, steps=name == "ingress")
        print()
        document["services"][name] = {**report, "collapsed": collapsed.splitlines()}
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)))
    print(f"summaries and collapsed stacks: {args.out}")
    return 0


def profile(args: argparse.Namespace) -> int:
    """Profile ``args.target`` (ingress, responder, sender, or all three end to end) and print
    the top costs. Without py-spy: one line saying how to install it, exit code 2."""
    if _py_spy() is None:
        print(MISSING, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="wecom-bus-profile-"))
    try:
        if args.target == "e2e":
            return _profile_e2e(args, workdir)
        if args.target == "ingress":
            collapsed, headline, load = _ingress(args, workdir)
        else:
            collapsed, headline, load = _consumer(args, workdir, args.target)
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarize(collapsed)
    _print(report, headline, steps=args.target == "ingress")
    document = {"target": args.target, "load": load, **report}
    document["collapsed"] = collapsed.splitlines()
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)))
    print(f"\nsummary and collapsed stacks: {args.out}")
    return 0
