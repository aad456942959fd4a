"""``wecom-bus fake-wecom`` (or ``python -m devkit.fakewecom``): the fake WeCom under uvicorn.

The apps come from the same variables the services read (``WECOM_CORP_ID``, ``WECOM_AGENT_ID``,
``WECOM_SECRET``, ``WECOM_TOKEN``, ``WECOM_ENCODING_AES_KEY``, or ``WECOM_APPS_FILE``). Where
callbacks go: ``FAKE_WECOM_CALLBACK_URL`` for the default app, or ``FAKE_WECOM_CALLBACK_BASE``
(default ``http://127.0.0.1:8080``) plus the ingress paths ``/callback`` and ``/callback/<app>``.
``FAKE_WECOM_MEMBERS`` (comma-separated userids) and ``FAKE_WECOM_EXPIRES_IN`` (token lifetime
in seconds) are optional.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from devkit.fakewecom.app import create_app
from devkit.fakewecom.bot import bots_from_env
from devkit.fakewecom.state import DEFAULT_MEMBERS, FakeApp, FakeConfig
from services.serving import serve, settle_heap, uvicorn_options
from shared import logs
from shared.config import load_settings
from shared.errors import ConfigError

__all__ = ["config_from_env", "run"]


def config_from_env(environ: Mapping[str, str] | None = None) -> FakeConfig:
    """The fake's apps and members from the environment; ConfigError names a bad variable."""
    env = os.environ if environ is None else environ
    settings = load_settings(env)
    if not settings.apps:
        raise ConfigError("WECOM_CORP_ID", "not set (and no WECOM_APPS_FILE)")
    single = env.get("FAKE_WECOM_CALLBACK_URL", "").strip()
    base = (env.get("FAKE_WECOM_CALLBACK_BASE", "").strip() or "http://127.0.0.1:8080").rstrip("/")
    for name, value in (("FAKE_WECOM_CALLBACK_URL", single), ("FAKE_WECOM_CALLBACK_BASE", base)):
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(name, "must start with http:// or https://")
    apps = []
    for name, app in settings.apps.items():
        url = (single or f"{base}/callback") if name == "default" else f"{base}/callback/{name}"
        apps.append(FakeApp.from_settings(app, url))
    members = (
        tuple(m.strip() for m in env.get("FAKE_WECOM_MEMBERS", "").split(",") if m.strip())
        or DEFAULT_MEMBERS
    )
    raw_expiry = env.get("FAKE_WECOM_EXPIRES_IN", "").strip() or "7200"
    if not raw_expiry.isdigit() or int(raw_expiry) < 1:
        raise ConfigError("FAKE_WECOM_EXPIRES_IN", "must be a whole number of seconds, at least 1")
    return FakeConfig(apps=tuple(apps), members=members, expires_in=int(raw_expiry))


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure("fake-wecom", settings.log_level, settings.log_format)
    app = create_app(config_from_env(), bots=bots_from_env(os.environ))
    # On loopback for development and tests: no proxy in front, no proxy headers to read.
    options = uvicorn_options(timeout_graceful_shutdown=5, proxy_headers=False)
    settle_heap()
    serve(app, host=args.host, port=args.port, **options)
    return 0


if __name__ == "__main__":
    from services.cli import main

    sys.exit(main(["fake-wecom", *sys.argv[1:]]))
