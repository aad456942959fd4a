"""wecom-bus: the services (ingress, responder, sender) and the operator tools, one command."""

from __future__ import annotations

import argparse
import importlib
import os
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

    cmd = sub.add_parser("ingress", help="the callback receiver (WeCom → events stream)")
    cmd.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server inside a pod
    cmd.add_argument("--port", type=int, default=8080)
    cmd.set_defaults(run=_lazy("services.ingress.__main__:run"))

    cmd = sub.add_parser("responder", help="run a consumer group with a router of handlers")
    cmd.add_argument("--group", default="responder")
    cmd.add_argument(
        "--handlers",
        default="services.responder.handlers:router",
        help="module:attribute of the Router to run",
    )
    cmd.add_argument(
        "--start",
        choices=("new", "backlog"),
        default=None,
        help="where a NEW group starts (built-in groups: backlog)",
    )
    cmd.add_argument("--burst", action="store_true", help="drain what is there, then exit")
    cmd.add_argument("--host", default="0.0.0.0")  # noqa: S104
    cmd.add_argument("--port", type=int, default=8081)
    cmd.set_defaults(run=_lazy("services.responder.__main__:run"))

    cmd = sub.add_parser("sender", help="the outbox consumer, token owner and send API")
    cmd.add_argument("--host", default="0.0.0.0")  # noqa: S104
    cmd.add_argument("--port", type=int, default=8082)
    cmd.set_defaults(run=_lazy("services.sender.__main__:run"))

    cmd = sub.add_parser("console", help="the operator console (web): lag, dead letters, sends")
    cmd.add_argument("--host", default="127.0.0.1", help="other than loopback: CONSOLE_API_KEY")
    cmd.add_argument("--port", type=int, default=8083)
    cmd.set_defaults(run=_lazy("services.console.__main__:run"))

    cmd = sub.add_parser("dev", help="everything on this machine (embedded Redis, fake WeCom)")
    cmd.add_argument(
        "--port-base", type=int, default=8080, help="ingress; +1 responder, +2 sender, +3 console"
    )
    cmd.add_argument("--fake-port", type=int, default=9000)
    cmd.add_argument("--timeout", type=float, default=60.0)
    cmd.add_argument(
        "--assistant", action="store_true", help="answer with the LLM assistant (stand-in model)"
    )
    cmd.set_defaults(run=_lazy("services.devcommands:dev"))

    cmd = sub.add_parser("fake-wecom", help="a stand-in for qyapi.weixin.qq.com with a chat page")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=9000)
    cmd.set_defaults(run=_lazy("services.devcommands:fake_wecom"))

    cmd = sub.add_parser("send", help="enqueue a message on the outbox")
    cmd.add_argument("--to", help="user ids joined by | (or @all)")
    cmd.add_argument("--party", help="department ids joined by |")
    cmd.add_argument("--tag", help="tag ids joined by |")
    cmd.add_argument("--app", default="default")
    kind = cmd.add_mutually_exclusive_group(required=True)
    kind.add_argument("--text")
    kind.add_argument("--markdown")
    kind.add_argument("--image", metavar="PATH", help="uploaded through the sender first")
    kind.add_argument("--file", metavar="PATH", help="uploaded through the sender first")
    kind.add_argument("--json", metavar="PATH", help="a whole message/send body")
    cmd.add_argument("--key", help="Idempotency-Key: repeat a send safely")
    cmd.add_argument("--sender-url", default=os.environ.get("SENDER_URL", "http://127.0.0.1:8082"))
    cmd.set_defaults(run=_lazy("services.commands.send:run"))

    cmd = sub.add_parser("deadletter", help="list, replay or drop dead letters")
    cmd.add_argument("action", choices=("list", "replay", "drop"))
    cmd.add_argument("ids", nargs="*", help="dead-letter ids (the first column of list)")
    cmd.add_argument("--all", action="store_true", help="replay/drop all that the filters match")
    cmd.add_argument("--group", help="only letters of this consumer group")
    cmd.add_argument("--stream", help="only letters of this stream")
    cmd.add_argument("--reason", help="only letters whose reason contains this (any case)")
    cmd.add_argument("--since", help="only letters newer than this: 30m, 2h, 1d or a time")
    cmd.add_argument("--limit", type=int, default=100, help="list at most this many")
    cmd.add_argument("--json", action="store_true", help="list one JSON object per line")
    cmd.set_defaults(run=_lazy("services.commands.deadletter:run"))

    cmd = sub.add_parser("check", help="validate configuration, reach Redis and WeCom")
    cmd.add_argument(
        "--redis",
        action="store_true",
        help="also check the Redis server in depth: version, scripts, maxmemory-policy, "
        "fsync, topology",
    )
    cmd.set_defaults(run=_lazy("services.commands.check:run"))

    cmd = sub.add_parser("keygen", help="print a fresh callback Token and EncodingAESKey")
    cmd.set_defaults(run=_keygen)
    return parser


def _load_dotenv() -> None:
    env_file = Path(".env")
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


def run_guarded(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, name: str
) -> int:
    """Run a command; bad configuration ends it with one line naming the variable."""
    _load_dotenv()
    try:
        return run(args)
    except ConfigError as exc:
        print(f"wecom-bus {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.run, args, args.command)


if __name__ == "__main__":
    sys.exit(main())
