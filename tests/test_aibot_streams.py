"""AI-bot stream state on a real Redis: appends in order, replays ignored, finish, expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.aibot.config import load_bots
from shared.aibot.streams import MAX_TEXT_BYTES, BotStreams, stream_id_for
from shared.bus import names
from shared.config import load_settings
from shared.errors import ConfigError

BOT = "helper"


@pytest.fixture
async def streams(redis: Redis) -> BotStreams:
    return BotStreams(redis, "wecom")


async def test_stream_ids_are_stable_per_bot_and_message() -> None:
    assert stream_id_for(BOT, "m1") == stream_id_for(BOT, "m1")
    assert stream_id_for(BOT, "m1") != stream_id_for(BOT, "m2")
    assert stream_id_for(BOT, "m1") != stream_id_for("other", "m1")
    assert len(stream_id_for(BOT, "m1")) == 32


async def test_text_grows_in_order_and_replays_are_ignored(streams: BotStreams) -> None:
    sid = stream_id_for(BOT, "m1")
    await streams.start(BOT, sid, ttl=600)
    state = await streams.read(BOT, sid)
    assert state is not None and (state.text, state.finished) == ("", False)
    assert state.started > 0
    assert await streams.append(BOT, sid, 1, "Hel") == "ok"
    assert await streams.append(BOT, sid, 2, "lo, ") == "ok"
    # A redelivered handler starts again from 1: what was applied is not repeated.
    assert await streams.append(BOT, sid, 1, "Hel") == "replayed"
    assert await streams.append(BOT, sid, 2, "lo, ") == "replayed"
    assert await streams.append(BOT, sid, 3, "世界") == "ok"
    state = await streams.read(BOT, sid)
    assert state is not None and (state.text, state.finished) == ("Hello, 世界", False)
    assert await streams.finish(BOT, sid, 4, "!") == "ok"
    assert await streams.finish(BOT, sid, 4, "!") == "finished"
    assert await streams.append(BOT, sid, 5, "more") == "finished"
    state = await streams.read(BOT, sid)
    assert state is not None and (state.text, state.finished) == ("Hello, 世界!", True)


async def test_concurrent_replays_apply_once(streams: BotStreams) -> None:
    sid = stream_id_for(BOT, "m2")
    await streams.start(BOT, sid, ttl=600)
    results = await asyncio.gather(*(streams.append(BOT, sid, 1, "x") for _ in range(20)))
    assert sorted(results).count("ok") == 1
    state = await streams.read(BOT, sid)
    assert state is not None and state.text == "x"


async def test_unknown_stream_takes_no_text(streams: BotStreams, redis: Redis) -> None:
    assert await streams.append(BOT, "nope", 1, "x") == "missing"
    assert await streams.read(BOT, "nope") is None
    assert await streams.close(BOT, "nope", "bye") is None
    assert await redis.keys("*") == []


async def test_state_expires_with_its_ttl(streams: BotStreams, redis: Redis) -> None:
    sid = stream_id_for(BOT, "m3")
    await streams.start(BOT, sid, ttl=600)
    ttl = await redis.ttl(names.bot_stream("wecom", BOT, sid))
    assert 590 < ttl <= 600
    await streams.append(BOT, sid, 1, "x")  # writes do not extend the lifetime
    assert await redis.ttl(names.bot_stream("wecom", BOT, sid)) <= ttl
    await redis.pexpire(names.bot_stream("wecom", BOT, sid), 1)
    await asyncio.sleep(0.01)
    assert await streams.read(BOT, sid) is None


async def test_text_is_bounded(streams: BotStreams) -> None:
    sid = stream_id_for(BOT, "m4")
    await streams.start(BOT, sid, ttl=600)
    assert await streams.append(BOT, sid, 1, "a" * (MAX_TEXT_BYTES - 1)) == "ok"
    assert await streams.append(BOT, sid, 2, "bb") == "full"
    assert await streams.finish(BOT, sid, 3, "cc") == "full"
    state = await streams.read(BOT, sid)
    assert state is not None and state.finished and len(state.text) == MAX_TEXT_BYTES - 1


async def test_close_ends_a_silent_stream_with_the_given_text(streams: BotStreams) -> None:
    silent, partial = stream_id_for(BOT, "m5"), stream_id_for(BOT, "m6")
    for sid in (silent, partial):
        await streams.start(BOT, sid, ttl=600)
    await streams.append(BOT, partial, 1, "half")
    closed = await streams.close(BOT, silent, "no answer")
    assert closed is not None and (closed.text, closed.finished) == ("no answer", True)
    closed = await streams.close(BOT, partial, "no answer")
    assert closed is not None and closed.text == "half"
    assert await streams.append(BOT, partial, 2, "late") == "finished"


async def test_sequence_numbers_start_at_one(streams: BotStreams) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        await streams.append(BOT, "x", 0, "x")


# ---------------------------------------------------------------- settings

KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bots.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_bots_file_is_read_into_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[bots.helper]\ntoken = "Tok1"\nencoding_aes_key = "{KEY}"\nwelcome = "Hi"\n'
        f'[bots.second]\ntoken = "Tok2"\nencoding_aes_key = "{KEY}"\nstream_ttl = 900\n',
    )
    settings = load_settings({"WECOM_BOTS_FILE": path})
    assert set(settings.bots) == {"helper", "second"}
    helper = settings.bots["helper"]
    assert helper.token.get() == "Tok1" and helper.welcome == "Hi" and helper.receive_id == ""
    assert settings.bots["second"].stream_ttl == 900
    assert "Tok1" not in repr(settings) and KEY not in repr(settings)
    assert load_settings({}).bots == {}


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ('[bots.helper]\nencoding_aes_key = "{key}"\n', "bots.helper].token"),
        ('[bots.helper]\ntoken = "T"\nencoding_aes_key = "short"\n', "encoding_aes_key"),
        ('[bots.helper]\ntoken = "bad token!"\nencoding_aes_key = "{key}"\n', ".token"),
        ('[bots.Bad]\ntoken = "T"\nencoding_aes_key = "{key}"\n', "bots.Bad"),
        ('[bots.h]\ntoken = "T"\nencoding_aes_key = "{key}"\ncolour = 1\n', "bots.h]"),
        ('[bots.h]\ntoken = "T"\nencoding_aes_key = "{key}"\nstream_ttl = 60\n', "stream_ttl"),
        ('[bots.h]\ntoken = "T"\nencoding_aes_key = "{key}"\nanswer_timeout = 900\n', "answer"),
        ('[bots.h]\ntoken = "T"\nencoding_aes_key = "{key}"\nwelcome = 3\n', "welcome"),
        ("[apps.x]\n", "WECOM_BOTS_FILE"),
        ("not toml [", "WECOM_BOTS_FILE"),
    ],
)
def test_bad_bots_files_name_the_key(tmp_path: Path, text: str, variable: str) -> None:
    path = write(tmp_path, text.replace("{key}", KEY))
    with pytest.raises(ConfigError) as info:
        load_bots(path)
    assert variable in info.value.variable
    assert KEY not in str(info.value)


def test_missing_bots_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({"WECOM_BOTS_FILE": str(tmp_path / "absent.toml")})
