"""``wecom-bus dev --assistant``: the whole dev stack as real processes, the LLM assistant
answering through the chat page's callback path against the stand-in model (no echo)."""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.dev import port_free
from devkit.embedded_redis import free_port

pytestmark = pytest.mark.slow


def port_base() -> int:
    """A port with the five after it free too (ingress, responder, sender, console, bot, model)."""
    for _ in range(50):
        base = free_port()
        if base < 65_000 and all(port_free(base + i) for i in range(1, 6)):
            return base
    raise AssertionError("no six free ports in a row on 127.0.0.1")


class Dev:
    def __init__(self, process: subprocess.Popen[bytes], out: Path, fake: int) -> None:
        self.process, self.out, self.fake = process, out, fake

    def wait_ready(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops everything." not in (text := self.out.read_text(errors="replace")):
            assert self.process.poll() is None, f"dev exited:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"dev not ready:\n{text[-3000:]}"
            time.sleep(0.2)
        return text

    def say(self, user: str, text: str) -> None:
        spec = {"from": user, "type": "text", "content": text}
        response = httpx.post(f"http://127.0.0.1:{self.fake}/fake/callbacks", json=spec, timeout=30)
        assert response.json()["ok"] is True

    def ask_bot(self, user: str, text: str, timeout: float = 30.0) -> dict[str, Any]:
        """A member's message to the AI bot ``helper``; its record once the stream ended."""
        fake = f"http://127.0.0.1:{self.fake}/fake/bot/messages"
        said = {"bot": "helper", "from": user, "content": text}
        seq = httpx.post(fake, json=said, timeout=30).json()["seq"]
        deadline = time.monotonic() + timeout
        while True:
            found = httpx.get(fake, timeout=10).json()["messages"]
            record: dict[str, Any] = next(r for r in found if r["seq"] == seq)
            if record["status"] != "answering" or time.monotonic() > deadline:
                return record
            time.sleep(0.1)

    def replies(self, user: str, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = httpx.get(f"http://127.0.0.1:{self.fake}/fake/messages", timeout=10)
            texts = [
                m["body"]["text"]["content"]
                for m in found.json()["messages"]
                if m["body"].get("touser") == user and m["body"].get("msgtype") == "text"
            ]
            if len(texts) >= count or time.monotonic() > deadline:
                return texts
            time.sleep(0.1)


@pytest.fixture
def dev(redis_url: str, tmp_path: Path) -> Iterator[Dev]:
    env: dict[str, Any] = {
        k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "BUS_", "LLM_"))
    }
    env.update(
        REDIS_URL=redis_url,
        BUS_PREFIX=f"dev{secrets.token_hex(4)}",  # nothing seen by other tests on this Redis
        ASSISTANT_INTERIM_AFTER="0",  # the replies counted below are the answers only
        LOG_FORMAT="json",
        FAKE_WECOM_BOT_POLL_INTERVAL="0.1",
    )
    base, fake = port_base(), free_port()
    out = tmp_path / "dev.out"
    argv = ["dev", "--assistant", "--port-base", str(base), "--fake-port", str(fake)]
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *argv],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Dev(process, out, fake)
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: dev stops its children in order
        try:
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_dev_with_the_assistant_remembers_a_name(dev: Dev) -> None:
    banner = dev.wait_ready()
    assert "assistant     examples.assistant (no echo)" in banner
    dev.say("alice", "我的名字是小明")
    first = dev.replies("alice", 1)
    assert len(first) == 1, first
    dev.say("alice", "我叫什么?")
    both = dev.replies("alice", 2)
    assert len(both) == 2 and "小明" in both[1], both
    time.sleep(1.0)  # an echo, had one run too, would have answered by now
    assert len(dev.replies("alice", 3, timeout=0)) == 2
    # The AI bot: the model's answer grows over WeCom's polls; its memory is the bot's own.
    told = dev.ask_bot("alice", "我的名字是小红。" + "一二三四五六七八九十" * 30)
    assert told["status"] == "finished" and "一二三四五六七八九十" * 30 in told["answer"], told
    # About 40 pieces, 0.05 s apart, polled every 0.1 s: the member saw it grow.
    shown = [text for text in told["shown"] if text]
    assert len(shown) >= 3 and all(b.startswith(a) for a, b in itertools.pairwise(shown)), shown
    asked = dev.ask_bot("alice", "我叫什么?")
    assert "小红" in asked["answer"] and "小明" not in asked["answer"], asked
