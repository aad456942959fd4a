"""``python -m bench.serve KIND --port P [--workers N]``: one receiver under uvicorn.

Every kind runs with the settings ``wecom-bus ingress`` uses (uvloop, httptools, no access log,
no server header, proxy headers from 127.0.0.1, 15 s keep-alive) and, in one process, on its
server (``services.serving.QuietServer``), so a comparison differs only in the application.
KIND ``raw`` is the raw asyncio responder instead (no uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

import uvicorn

from services.ingress.__main__ import UVICORN_OPTIONS
from services.serving import serve, settle_heap

__all__ = ["FACTORIES", "main"]

FACTORIES = {
    "bare": "bench.servers:bare_app",
    "verify": "bench.servers:verify_app",
    "asgi": "bench.servers:asgi_verify_app",
    "ingress": "bench.servers:ingress_app",
    "usual": "bench.usual:usual_app",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=[*FACTORIES, "raw"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.kind == "raw":
        import uvloop

        from bench.servers import serve_raw

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_raw(args.host, args.port))
        return 0
    # Every receiver's process as the ingress's: its application imported, then the heap settled.
    importlib.import_module(FACTORIES[args.kind].partition(":")[0])
    settle_heap()
    # The ingress's production settings, for every receiver alike; one process runs on the
    # ingress's server (QuietServer), several on uvicorn's (one per worker).
    options = {"factory": True, "forwarded_allow_ips": "127.0.0.1", **UVICORN_OPTIONS}
    if args.workers == 1:
        serve(FACTORIES[args.kind], host=args.host, port=args.port, **options)
    else:
        uvicorn.run(
            FACTORIES[args.kind], host=args.host, port=args.port, workers=args.workers, **options
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
