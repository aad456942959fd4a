"""The ``wecom-bus`` command: one entry point for every service and tool (DESIGN §3)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["main"]


def _keygen(args: argparse.Namespace) -> int:
    from shared.protocol.crypto import generate_encoding_aes_key, generate_token

    print(f"WECOM_TOKEN={generate_token()}")
    print(f"WECOM_ENCODING_AES_KEY={generate_encoding_aes_key()}")
    return 0


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's module only when it runs, so `keygen` does not load uvicorn."""

    def run(args: argparse.Namespace) -> int:
        module, func = target.split(":")
        result: int = getattr(importlib.import_module(module), func)(args)
        return result

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wecom-bus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmd = sub.add_parser("keygen", help="print a fresh callback Token and EncodingAESKey")
    cmd.set_defaults(run=_keygen)
    return parser


def _load_dotenv() -> None:
    env_file = Path(".env")
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _load_dotenv()
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"wecom-bus {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
