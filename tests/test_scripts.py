"""Every Lua script of the bus runs through ``shared.bus.scripts.Script`` (EVALSHA, NOSCRIPT
fallback, keys as KEYS), and Script itself survives a SCRIPT FLUSH."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.bus.scripts import Script

BUS = Path(__file__).parent.parent / "shared" / "bus"
# Other ways of running Lua: redis-py's register_script, EVAL/EVALSHA by hand, a home-made class.
OTHER_WAYS = re.compile(r"register_script\(|\.evalsha\(|\.eval\(|class _?Script\b")
# Converted on the sender branch (it owns that file); listed, not hidden: it turns to XPASS there.
SENDER_OWNED = {"delayed.py"}


def bus_modules() -> list[object]:
    params: list[object] = []
    for path in sorted(BUS.glob("*.py")):
        if path.name == "scripts.py":
            continue
        marks = (
            [pytest.mark.xfail(reason="the sender branch moves its script to Script")]
            if path.name in SENDER_OWNED
            else []
        )
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


@pytest.mark.parametrize("path", bus_modules())
def test_lua_runs_only_through_script(path: Path) -> None:
    hits = [
        line.strip() for line in path.read_text("utf-8").splitlines() if OTHER_WAYS.search(line)
    ]
    assert hits == []


async def test_script_reloads_itself_after_a_script_flush(redis: Redis) -> None:
    echo = Script("return {KEYS[1], ARGV[1]}")
    assert await echo(redis, ["k"], ["v"]) == [b"k", b"v"]
    await redis.script_flush()
    assert await echo(redis, ["k2"], [3]) == [b"k2", b"3"]
