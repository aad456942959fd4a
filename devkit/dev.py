"""``wecom-bus dev``: the whole system on one machine, stopped cleanly by Ctrl-C.

With nothing configured it starts an embedded Redis and the fake WeCom with generated
credentials; with ``REDIS_URL`` or ``WECOM_*`` set it uses those instead (real WeCom then, and no
fake). Every service runs as its own process, exactly as in production. ``--assistant`` (or
``WECOM_DEV_ASSISTANT=1``) answers with the LLM assistant against the stand-in model.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devkit import fakellm
from devkit.embedded_redis import EmbeddedRedis, die_with_parent
from shared.protocol.crypto import generate_encoding_aes_key, generate_token

__all__ = ["Stack", "dev_credentials", "run"]


@dataclass
class Stack:
    """The child processes of a dev run, stopped in reverse order."""

    env: dict[str, str]
    redis: EmbeddedRedis | None = None
    log_dir: Path | None = None  # each child's output in <name>.log instead of our terminal
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(
        self, name: str, *argv: str, label: str | None = None, command: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``wecom-bus <name> <argv…>`` (or ``command``, a whole argv) as a child."""
        out = None
        if self.log_dir is not None:
            out = (self.log_dir / f"{label or name}.log").open("ab")
        try:
            process = subprocess.Popen(
                command or [sys.executable, "-m", "services.cli", name, *argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=die_with_parent,  # no threads exist yet
                process_group=0,  # Ctrl-C reaches only us; we stop the children in order
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own descriptor
        self.children.append((label or name, process))
        return process

    def wait_ready(self, urls: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(urls)
        with httpx.Client(timeout=1.0) as client:
            while pending:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
                for name, url in list(pending.items()):
                    try:
                        if client.get(url).status_code == 200:
                            del pending[name]
                    except httpx.TransportError:
                        pass
                time.sleep(0.1)

    def check_alive(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.redis is not None:
            self.redis.stop()


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port``: bound as uvicorn binds (SO_REUSEADDR), so the
    connections a stopped run left in TIME_WAIT do not count, a listening socket does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _busy_port(ports: dict[str, int], use_fake: bool) -> str | None:
    """The line to stop with when a port we need is taken, else None."""
    for name, port in ports.items():
        if (name != "fake-wecom" or use_fake) and not port_free(port):
            return (
                f"wecom-bus dev: port {port} ({name}) is in use (another wecom-bus dev?); "
                "stop it or choose other ports with --port-base / --fake-port"
            )
    return None


def dev_credentials(env: dict[str, str], fake_port: int, ingress_port: int) -> None:
    """Generated app credentials pointing the sender at the fake WeCom."""
    env.update(
        WECOM_CORP_ID="wwdevcorp00000001",
        WECOM_AGENT_ID="1000002",
        WECOM_SECRET=secrets.token_urlsafe(24),
        WECOM_TOKEN=generate_token(),
        WECOM_ENCODING_AES_KEY=generate_encoding_aes_key(),
        WECOM_API_BASE=f"http://127.0.0.1:{fake_port}",
        FAKE_WECOM_CALLBACK_URL=f"http://127.0.0.1:{ingress_port}/callback",
    )


def dev_bots(env: dict[str, str], directory: Path, ingress_port: int) -> None:
    """A generated AI bot, ``helper``, for the chat page's bot mode (callbacks to /bot/helper)."""
    path = directory / "bots.toml"
    path.write_text(
        "[bots.helper]\n"
        f'token = "{generate_token()}"\n'
        f'encoding_aes_key = "{generate_encoding_aes_key()}"\n'
        'welcome = "Hi, I am an AI bot: I stream back what you type."\n',
        encoding="utf-8",
    )
    env.update(
        WECOM_BOTS_FILE=str(path), FAKE_WECOM_CALLBACK_BASE=f"http://127.0.0.1:{ingress_port}"
    )


ASSISTANT = ("--group", "assistant", "--handlers", "examples.assistant:router")
MODEL_CHUNK_DELAY = 0.05  # seconds between the stand-in's pieces: the chat page shows them grow


def dev_assistant(env: dict[str, str], ports: dict[str, int]) -> None:
    """The stand-in model on port base + 5 and the ``LLM_*`` settings pointing at it.

    The assistant takes the place of the echo behaviours (the default responder runs
    ``examples.assistant:router`` in group "assistant", and no bot echo runs), so a member gets
    one answer, not an echo and the model's.
    """
    ports["fake-llm"] = ports["ingress"] + 5
    ports.pop("aibot-echo", None)
    env.update(fakellm.assistant_env(ports["fake-llm"]))


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base: int = args.port_base
    ports = {
        "ingress": base,
        "responder": base + 1,
        "sender": base + 2,
        "console": base + 3,
        "fake-wecom": args.fake_port,
    }
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("PYTHONUNBUFFERED", "1")
    use_fake = not env.get("WECOM_CORP_ID") and not env.get("WECOM_APPS_FILE")
    if use_fake:
        dev_credentials(env, ports["fake-wecom"], ports["ingress"])
    scratch = tempfile.TemporaryDirectory(prefix="wecom-bus-dev-")
    if use_fake and not env.get("WECOM_BOTS_FILE"):
        dev_bots(env, Path(scratch.name), ports["ingress"])
        ports["aibot-echo"] = base + 4  # answers the bot: examples/aibot, its own group
    if args.assistant or env.get("WECOM_DEV_ASSISTANT") == "1":
        dev_assistant(env, ports)
    # A key we generate is fine to print in the banner; an operator's own key is not.
    generated_key = not env.get("SENDER_API_KEY")
    if generated_key:
        env["SENDER_API_KEY"] = secrets.token_urlsafe(24)
    # Make `python -m services.cli` importable from any working directory.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )

    if (busy := _busy_port(ports, use_fake)) is not None:
        print(busy, file=sys.stderr)
        return 1
    stack = Stack(env=env)
    try:
        if not env.get("REDIS_URL"):
            stack.redis = EmbeddedRedis().start()
            env["REDIS_URL"] = stack.redis.url
        _spawn_all(stack, ports, use_fake)
        urls = {
            name: f"http://127.0.0.1:{port}/{'healthz' if name == 'fake-llm' else 'readyz'}"
            for name, port in ports.items()
            if name != "fake-wecom" or use_fake
        }
        stack.wait_ready(urls, timeout=args.timeout)
        fake = f"http://127.0.0.1:{ports['fake-wecom']}"
        if use_fake:
            verified = httpx.post(f"{fake}/fake/verify", json={"app": "default"}, timeout=10).json()
            if not verified.get("ok"):
                raise RuntimeError(f"URL verification failed: {verified.get('detail')}")
        key = env["SENDER_API_KEY"] if generated_key else "$SENDER_API_KEY"
        _banner(env, ports, key, fake if use_fake else None, time.monotonic() - started)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        print(f"wecom-bus dev: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        scratch.cleanup()


def _spawn_all(stack: Stack, ports: dict[str, int], use_fake: bool) -> None:
    """The fake WeCom (when used), the three services and the console, then the example
    consumers."""
    if use_fake:
        stack.spawn("fake-wecom", "--host", "127.0.0.1", "--port", str(ports["fake-wecom"]))
    if "fake-llm" in ports:
        model = fakellm.command(ports["fake-llm"], chunk_delay=MODEL_CHUNK_DELAY)
        stack.spawn("fake-llm", command=model)
    for name in ("ingress", "responder", "sender", "console"):
        role = ASSISTANT if name == "responder" and "fake-llm" in ports else ()
        stack.spawn(name, *role, "--host", "127.0.0.1", "--port", str(ports[name]))
    if "aibot-echo" in ports:
        echo = ("--group", "aibot-echo", "--handlers", "examples.aibot.router:router")
        port = ("--host", "127.0.0.1", "--port", str(ports["aibot-echo"]))
        stack.spawn("responder", *echo, *port, label="aibot-echo")


def _banner(
    env: dict[str, str], ports: dict[str, int], key: str, fake: str | None, took: float
) -> None:
    body = '{"touser":"alice","msgtype":"text","text":{"content":"hello from wecom-bus"}}'
    curl = shlex.join(
        [
            "curl", "-sS", f"http://127.0.0.1:{ports['sender']}/v1/messages",
            "-H", f"Authorization: Bearer {key}",
            "-H", "Content-Type: application/json", "-d", body,
        ]
    )  # fmt: skip
    lines = [
        f"wecom-bus is ready ({took:.1f}s)",
        f"  callback URL  http://127.0.0.1:{ports['ingress']}/callback",
        f"  Redis         {env['REDIS_URL']}",
        f"  console       http://127.0.0.1:{ports['console']}/   (lag, dead letters, sends)",
    ]
    if fake:
        lines += [f"  chat page     {fake}/   (fake WeCom: pick a member and type)"]
        if "FAKE_WECOM_CALLBACK_BASE" in env:
            lines += ["  AI bot        in the chat page's app list: helper (AI bot) → /bot/helper"]
    if "fake-llm" in ports:
        model = f"http://127.0.0.1:{ports['fake-llm']}/v1"
        lines += [f"  assistant     examples.assistant (no echo) ← stand-in model {model}"]
    if not fake:
        lines += [
            "  WeCom         real (WECOM_* are set): configure the callback URL in the console"
        ]
    lines += [f"  send API      {curl}", "Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)
