"""Keyword auto-reply (关键词自动回复): the first rule of a TOML file that matches a text answers.

Run it as its own consumer group, so it sees every event whatever the default responder does::

    wecom-bus responder --group keywords --handlers examples.keywords.router:router

The rules are read once, at import, from the file named by ``KEYWORDS_FILE`` (default: the
``keywords.toml`` beside this module). A bad file stops the service at start with one error
naming the file, the rule (counted from 1) and the key. A rule::

    [[rule]]
    match = "报销"            # required: a keyword, found anywhere in the text, any case …
    regex = false            # … or, when true, a Python regular expression (re.search)
    reply = "报销流程见 …"    # required: the answer (WeCom takes at most 2048 bytes)
    markdown = false         # send the answer as a markdown message
    apps = ["default"]       # only messages to these apps (names of the apps file); default any
    users = ["zhangsan"]     # only messages from these members (UserIDs); default anyone

Only text messages are looked at. Events, other messages and texts that no rule matches are left
to later routes, so the router can also be included ahead of others in the default responder.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from shared.bus import Context, Predicate, Router, app, sender, text
from shared.errors import ConfigError, SchemaError
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import MarkdownSend, SendRequest, TextSend

__all__ = [
    "DEFAULT_FILE",
    "ENV_VAR",
    "RULES",
    "Rule",
    "build_router",
    "load_rules",
    "router",
    "rules_file",
]

log = logging.getLogger("wecom_bus.examples.keywords")

ENV_VAR = "KEYWORDS_FILE"
DEFAULT_FILE = Path(__file__).with_name("keywords.toml")


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One ``[[rule]]`` of the file, validated."""

    match: str
    reply: str
    regex: bool = False
    markdown: bool = False
    apps: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def predicate(self) -> Predicate:
        """The rule as a router predicate: ``text(…) & app(…) & sender(…)``."""
        when = text(self.match) if self.regex else text(re.escape(self.match), re.IGNORECASE)
        if self.apps:
            when = when & app(*self.apps)
        if self.users:
            when = when & sender(*self.users)
        return when

    def answer(self, msg: TextMessage) -> SendRequest:
        """The reply to ``msg``, to the member who sent it."""
        if self.markdown:
            return MarkdownSend.reply_to(msg, self.reply)
        return TextSend.reply_to(msg, self.reply)


# key -> (type, what a wrong value should have been)
_KEYS: dict[str, tuple[type, str]] = {
    "match": (str, "a non-empty string"),
    "reply": (str, "a non-empty string"),
    "regex": (bool, "true or false"),
    "markdown": (bool, "true or false"),
    "apps": (list, "a list of non-empty strings"),
    "users": (list, "a list of non-empty strings"),
}
_REQUIRED = ("match", "reply")


def _bad(path: Path, n: int, key: str, problem: str) -> ConfigError:
    return ConfigError(str(path), f"rule #{n}, key {key!r}: {problem}")


def _value_ok(value: object, kind: type) -> bool:
    if kind is str:
        return isinstance(value, str) and value.strip() != ""
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
    return isinstance(value, kind)


def _rule(path: Path, n: int, raw: object) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(str(path), f"rule #{n}: must be a table ([[rule]])")
    for key in raw:
        if key not in _KEYS:
            raise _bad(path, n, key, f"unknown key (known: {', '.join(_KEYS)})")
    for key in _REQUIRED:
        if key not in raw:
            raise _bad(path, n, key, "is required")
    for key, value in raw.items():
        kind, expected = _KEYS[key]
        if not _value_ok(value, kind):
            raise _bad(path, n, key, f"must be {expected}")
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    rule = Rule(**fields)
    if rule.regex:
        try:
            re.compile(rule.match)
        except re.error as exc:
            raise _bad(path, n, "match", f"is not a valid regular expression: {exc}") from None
    try:  # WeCom's own limits, checked now rather than at the first matching message
        (MarkdownSend if rule.markdown else TextSend).to("probe", rule.reply)
    except SchemaError as exc:
        raise _bad(path, n, "reply", exc.problem) from None
    return rule


def load_rules(path: str | os.PathLike[str]) -> tuple[Rule, ...]:
    """Read and validate a rules file; ConfigError names the file, the rule and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
        raise ConfigError(str(path), problem) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from None
    for key in data:
        if key != "rule":
            raise ConfigError(str(path), f"unknown top-level key {key!r}: write [[rule]] tables")
    rules = data.get("rule")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(str(path), "has no rules: write one [[rule]] table per rule")
    return tuple(_rule(path, n, raw) for n, raw in enumerate(rules, start=1))


def build_router(rules: Sequence[Rule], name: str = "keywords") -> Router:
    """A router with one route: a text some rule matches gets the first such rule's reply."""
    checks = [(rule, rule.predicate()) for rule in rules]
    router = Router(name)

    def matched(msg: TextMessage, ctx: Context) -> Rule | None:
        return next((rule for rule, when in checks if when(msg, ctx)), None)

    async def reply(msg: TextMessage, ctx: Context) -> SendRequest | None:
        """A keyword of the rules file: its reply."""
        rule = matched(msg, ctx)
        return rule.answer(msg) if rule is not None else None

    # The handler's name goes into the outbox ids; "<locals>" in it would be noise.
    reply.__qualname__ = reply.__name__
    when = Predicate(lambda e, c: matched(e, c) is not None, f"keywords({len(checks)} rules)")
    router.on(TextMessage, when=when)(reply)
    return router


def rules_file(environ: Mapping[str, str] = os.environ) -> Path:
    """``KEYWORDS_FILE``, or the packaged ``keywords.toml`` when it is unset or empty."""
    return Path(environ.get(ENV_VAR) or DEFAULT_FILE)


# Read once at import, like the rest of the configuration: a bad file fails the start.
RULES = load_rules(rules_file())
router = build_router(RULES)
log.info("keyword rules loaded", extra={"file": str(rules_file()), "rules": len(RULES)})
