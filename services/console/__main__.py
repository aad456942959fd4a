"""``wecom-bus console [--host H] [--port 8083]``: the operator console under uvicorn.

It shows message contents and can replay or drop dead letters, so it wants ``CONSOLE_API_KEY``
(or ``CONSOLE_API_KEY_FILE``); without one it starts only on a loopback address (``make dev``).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from services.console.app import create_app
from services.console.auth import Access
from services.serving import serve, uvicorn_options
from shared import logs
from shared.config import load_settings
from shared.connection import connect

NO_KEY = (
    "wecom-bus console: CONSOLE_API_KEY is not set, so it listens on 127.0.0.1 or ::1 only "
    "(got --host {host}); set CONSOLE_API_KEY (or CONSOLE_API_KEY_FILE) to serve others"
)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure("console", settings.log_level, settings.log_format)
    key = settings.console_api_key
    if key is None and not loopback(args.host):
        print(NO_KEY.format(host=args.host), file=sys.stderr)
        return 2
    redis = connect(settings.require_redis(), socket_timeout=5, socket_connect_timeout=3)
    app = create_app(settings, redis, Access(key.get() if key is not None else None))
    serve(app, host=args.host, port=args.port, **uvicorn_options(proxy_headers=False))
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["console", *sys.argv[1:]]))
