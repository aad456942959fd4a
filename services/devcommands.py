"""``wecom-bus dev`` and ``wecom-bus fake-wecom``: thin doors into the dev-only ``devkit`` package.

devkit (the fake WeCom, the dev supervisor, the embedded Redis) is not part of the production
wheel or image. Where it is not installed these commands end with one line saying what to
install, instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

__all__ = ["MISSING", "dev", "fake_wecom"]

MISSING = (
    "wecom-bus {command}: needs the development kit, which production installs leave out; "
    "in a checkout run `make install` (or `pip install -e ./devkit`)"
)


def _devkit(command: str, target: str) -> Callable[[argparse.Namespace], int] | None:
    module, func = target.split(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != "devkit" and not (exc.name or "").startswith("devkit."):
            raise
        print(MISSING.format(command=command), file=sys.stderr)
        return None
    run: Callable[[argparse.Namespace], int] = getattr(loaded, func)
    return run


def dev(args: argparse.Namespace) -> int:
    run = _devkit("dev", "devkit.dev:run")
    return 2 if run is None else run(args)


def fake_wecom(args: argparse.Namespace) -> int:
    run = _devkit("fake-wecom", "devkit.fakewecom.__main__:run")
    return 2 if run is None else run(args)
