"""``python -m bench [--quick] [--only ingress|pipeline]`` and ``python -m bench profile``.

The run builds every callback first, then measures the ingress section (five receivers on one
core, latency at half of peak, fsync, workers, Redis round trips) and the pipeline section (end
to end, consumers, gettoken, RSS), prints one table and writes the JSON results (default
``bench/results.json``). It needs no network beyond loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.callbacks import Credentials, callback_requests, save_requests
from bench.plan import FULL, QUICK, Context, machine
from bench.report import console

__all__ = ["main"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _raise_priority(enabled: bool) -> str:
    """Ask for a better CPU share than other work on the machine (root only); say what we got."""
    if not enabled:
        return "default"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)  # inherited by every child we start
    except PermissionError:
        return "default (not permitted)"
    return "nice -10"


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    plan = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="wecom-bus-bench-"))
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "plan": msgspec.structs.asdict(plan),
        "priority": _raise_priority(args.priority),
    }
    try:
        creds = Credentials.generate()
        _log(f"building {plan.requests} signed callbacks …")
        requests_file = workdir / "callbacks.pkl"
        save_requests(callback_requests(creds, plan.requests), requests_file)
        ctx = Context(
            plan=plan,
            creds=creds,
            workdir=workdir,
            cores=procs.cores(),
            requests_file=requests_file,
            results=results,
        )
        if args.only in (None, "ingress"):
            from bench.ingress import run_ingress

            _log("ingress:")
            results["ingress"] = run_ingress(ctx, _log)
        if args.only in (None, "pipeline"):
            from bench.pipeline import run_pipeline

            _log("pipeline:")
            results["pipeline"] = run_pipeline(ctx, _log)
    except Exception:
        _log(f"bench failed; logs kept in {workdir}")
        raise
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(results)))
    print(console(results))
    print(f"results: {args.out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, for development")
    parser.add_argument("--only", choices=("ingress", "pipeline"))
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument(
        "--priority", action="store_true", help="run at nice -10 (root) on a busy machine"
    )
    sub = parser.add_subparsers(dest="command")
    prof = sub.add_parser("profile", help="py-spy on a service under load; print the top costs")
    prof.add_argument(
        "--target", choices=("ingress", "responder", "sender", "e2e"), default="ingress"
    )
    prof.add_argument("--e2e-rate", type=int, default=500, help="--target e2e: callbacks a second")
    prof.add_argument("--seconds", type=float, default=10.0)
    prof.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    prof.add_argument("--out", type=Path, default=Path("bench/results-profile.json"))
    args = parser.parse_args(argv)
    if args.command == "profile":
        from bench.profile import profile

        return profile(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
