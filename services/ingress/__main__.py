"""``wecom-bus ingress`` (or ``python -m services.ingress``): the receiver under uvicorn."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from services.ingress.app import create_app
from shared import logs
from shared.config import load_settings


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure("ingress", settings.log_level, settings.log_format)
    app = create_app(settings)  # checks the apps' Token and EncodingAESKey before listening
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.ingress_trusted_proxies,
        timeout_keep_alive=15,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["ingress", *sys.argv[1:]]))
