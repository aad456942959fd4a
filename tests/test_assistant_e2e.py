"""The assistant end to end, every part a real process.

fake WeCom → ingress → the assistant group (``wecom-bus responder --group assistant
--handlers examples.assistant:router``) → the stand-in model (``python -m devkit.fakellm``)
→ sender → fake WeCom.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.embedded_redis import free_port
from devkit.fakellm import DEFAULT_MODEL, assistant_env, command, long_text
from examples.assistant.behaviour import REPLIES
from tests.system import System, fresh_database, running_system

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEY, MODEL = "sk-e2e-key-0123456789", DEFAULT_MODEL


@pytest.fixture(scope="module")
def system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    llm_port, assistant_port = free_port(), free_port()
    # An answer of several parts waits for each part's delivery: give the handler room.
    env = {**assistant_env(llm_port, api_key=KEY), "BUS_HANDLER_TIMEOUT": "120"}
    log_dir = tmp_path_factory.mktemp("assistant-e2e")
    services = ("fake-wecom", "ingress", "sender")
    fresh_database(redis_url)
    with running_system(redis_url, log_dir, services, **env) as running:
        stack = running.stack
        with (log_dir / "fakellm.log").open("ab") as out:
            llm = subprocess.Popen(
                command(llm_port, api_key=KEY, chunk_delay=0.002),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        stack.children.append(("fakellm", llm))  # stopped with the rest
        args = ["--group", "assistant", "--handlers", "examples.assistant:router"]
        stack.spawn("responder", *args, "--port", str(assistant_port), label="assistant")
        running.ports.update(fakellm=llm_port, assistant=assistant_port)
        stack.wait_ready(
            {
                "fakellm": running.url("fakellm", "/healthz"),
                "assistant": running.url("assistant", "/readyz"),
            },
            timeout=60,
        )
        yield running


def texts_to(system: System, user: str) -> list[str]:
    """The texts the fake WeCom delivered to ``user``, in the order it received them."""
    delivered = (m for m in system.sends() if m["status"] == "delivered")
    bodies = (m["body"] for m in delivered if m["body"].get("touser") == user)
    return [b["text"]["content"] for b in bodies if b.get("msgtype") == "text"]


def ask(system: System, user: str, text: str, count: int = 1) -> list[str]:
    """Say ``text`` as ``user``; return the next ``count`` messages the member receives."""
    before = len(texts_to(system, user))
    assert system.push(**{"from": user, "type": "text", "content": text})["ok"] is True
    got = system.wait_for(
        lambda: (t := texts_to(system, user)[before:]) and len(t) >= count and t,
        timeout=60,
        what=f"{count} answer(s) to {text!r}",
    )
    answers: list[str] = got
    return answers


def llm_requests(system: System) -> list[dict[str, Any]]:
    response = httpx.get(system.url("fakellm", "/_fake/requests"), timeout=10)
    response.raise_for_status()
    requests: list[dict[str, Any]] = response.json()
    return requests


def test_a_name_is_remembered_until_reset(system: System) -> None:
    assert ask(system, "alice", "我的名字是小明") == ["收到：我的名字是小明"]
    assert ask(system, "alice", "我叫什么?") == ["你叫小明。"]
    assert ask(system, "bob", "我叫什么?") == ["我还不知道你的名字。"]
    assert ask(system, "alice", "/reset") == [REPLIES["reset"]]
    assert ask(system, "alice", "我叫什么?") == ["我还不知道你的名字。"]


def test_a_long_answer_arrives_whole_in_ordered_parts(system: System) -> None:
    text = long_text()
    expected = text.count("\n\n") + 1

    def whole() -> list[str] | None:
        parts = texts_to(system, "carol")
        return parts if "\n\n".join(parts).count("\n\n") + 1 >= expected else None

    assert system.push(**{"from": "carol", "type": "text", "content": "long answer please"})
    parts = system.wait_for(whole, timeout=90, what="the whole long answer")
    assert "\n\n".join(parts) == text
    assert len(parts) >= 3 and all(len(p.encode()) <= 2048 for p in parts)


def test_the_key_and_model_are_sent_on_every_call(system: System) -> None:
    ask(system, "user1", "你好")
    requests = llm_requests(system)
    assert len(requests) >= 2
    assert all(r["authorized"] and r["model"] == MODEL for r in requests)


def test_no_secret_in_the_logs(system: System) -> None:
    ask(system, "user2", "hello")
    assert KEY not in system.logs()
