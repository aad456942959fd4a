"""``wecom-bus ingress`` (or ``python -m services.ingress``): the receiver under uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.ingress.app import create_app
from services.serving import serve, settle_heap, uvicorn_options
from shared import logs, tracing
from shared.config import load_settings

# Production settings, also used by `make bench` for every receiver it compares.
UVICORN_OPTIONS: dict[str, Any] = {
    **uvicorn_options(),
    "loop": "uvloop",
    "http": "httptools",
    # Behind a k8s Ingress: the app applies proxy headers from INGRESS_TRUSTED_PROXIES itself,
    # only where they are read (services/ingress/app.py), not on every callback.
    "proxy_headers": False,
    "timeout_keep_alive": 15,
    "timeout_graceful_shutdown": 10,
}


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure("ingress", settings.log_level, settings.log_format)
    tracing.setup("ingress")  # on only with wecom-bus[otel] and OTEL_* set
    app = create_app(settings)  # checks the apps' Token and EncodingAESKey before listening
    settle_heap()
    serve(app, host=args.host, port=args.port, **UVICORN_OPTIONS)
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["ingress", *sys.argv[1:]]))
