"""AI bots' settings: ``WECOM_BOTS_FILE``, a TOML file with one ``[bots.<name>]`` table per bot.

Each bot has its own callback URL (``/bot/<name>``), Token and EncodingAESKey; the other keys
have defaults (docs/aibot.md, *Settings*). Errors are ``ConfigError`` naming the file, table and
key; secrets are held in ``Secret``.
"""

from __future__ import annotations

import re
from typing import Any

from shared.config import BotSettings, Secret, toml_tables
from shared.errors import ConfigError

__all__ = ["BotSettings", "load_bots"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
_TOKEN = re.compile(r"[A-Za-z0-9]{1,32}")
_WECOM_POLL_WINDOW = 360  # WeCom polls at most six minutes from the user's message
_TEXTS = ("welcome", "receive_id", "no_answer_text", "expired_text")
_NUMBERS = ("stream_ttl", "answer_timeout")
_KEYS = frozenset({"token", "encoding_aes_key", *_TEXTS, *_NUMBERS})


def _variable(name: str, key: str) -> str:
    return f"WECOM_BOTS_FILE[bots.{name}].{key}"


def _secret(
    name: str, raw: dict[str, Any], key: str, pattern: re.Pattern[str], rule: str
) -> Secret:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(_variable(name, key), "not set")
    if not pattern.fullmatch(value.strip()):
        raise ConfigError(_variable(name, key), rule)
    return Secret(value.strip())


def _bot(name: str, raw: Any) -> BotSettings:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"WECOM_BOTS_FILE[bots.{name}]", "names are 1-32 of a-z, 0-9, '_', '-'")
    if not isinstance(raw, dict):
        raise ConfigError(f"WECOM_BOTS_FILE[bots.{name}]", "must be a table")
    if unknown := set(raw) - _KEYS:
        raise ConfigError(f"WECOM_BOTS_FILE[bots.{name}]", f"unknown keys {sorted(unknown)}")
    options: dict[str, Any] = {}
    for key in _TEXTS:
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(_variable(name, key), "must be a string")
            options[key] = raw[key]
    for key in _NUMBERS:
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
                raise ConfigError(_variable(name, key), "must be a positive integer (seconds)")
            options[key] = raw[key]
    bot = BotSettings(
        name=name,
        token=_secret(name, raw, "token", _TOKEN, "must be 1-32 English letters or digits"),
        encoding_aes_key=_secret(
            name, raw, "encoding_aes_key", _AES_KEY, "must be 43 characters [A-Za-z0-9]"
        ),
        **options,
    )
    if bot.stream_ttl < _WECOM_POLL_WINDOW:
        raise ConfigError(_variable(name, "stream_ttl"), "must be at least 360 (WeCom's 6 min)")
    if bot.answer_timeout >= bot.stream_ttl:
        raise ConfigError(_variable(name, "answer_timeout"), "must be less than stream_ttl")
    return bot


def load_bots(path: str | None) -> dict[str, BotSettings]:
    """The bots of ``path`` (``WECOM_BOTS_FILE``); no file means no bots."""
    if not path:
        return {}
    table = toml_tables(path, "WECOM_BOTS_FILE", "bots")
    return {name: _bot(name, raw) for name, raw in table.items()}
