"""Keyword auto-reply (关键词自动回复): the first rule of a TOML file that matches a text answers.

Run it as its own consumer group, so it sees every event whatever the default responder does::

    wecom-bus responder --group keywords --handlers examples.keywords.router:router

The rules are read once, when the service starts (a startup hook), from the file named by
``KEYWORDS_FILE`` in the service's environment (default: the ``keywords.toml`` beside this
module). A bad file stops the service at start with one error naming the file, the rule
(counted from 1) and the key. A rule::

    [[rule]]
    match = "报销"            # required: a keyword, found anywhere in the text, any case …
    regex = false            # … or, when true, a Python regular expression (re.search)
    reply = "报销流程见 …"    # required: the answer (over 2048 bytes: sent as ordered parts)
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

from shared.bus import Context, Predicate, Router, State, app, sender, text
from shared.errors import ConfigError, SchemaError
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import MarkdownSend, SendRequest, TextSend

__all__ = [
    "DEFAULT_FILE",
    "ENV_VAR",
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


def build_router(rules: Sequence[Rule] | None = None, name: str = "keywords") -> Router:
    """A router with one route: a text some rule matches gets the first such rule's reply.

    ``rules=None``: the rules file is read at start, from ``KEYWORDS_FILE`` in the service's
    environment (``state.environ``), and kept on the state.
    """
    router = Router(name)
    attribute = f"{name}_rules"

    def current(ctx: Context) -> Sequence[tuple[Rule, Predicate]]:
        return getattr(ctx.state, attribute) if rules is None else fixed

    def matched(msg: TextMessage, ctx: Context) -> Rule | None:
        return next((rule for rule, when in current(ctx) if when(msg, ctx)), None)

    async def reply(msg: TextMessage, ctx: Context) -> SendRequest | None:
        """A keyword of the rules file: its reply."""
        rule = matched(msg, ctx)
        return rule.answer(msg) if rule is not None else None

    async def load(state: State) -> None:
        path = rules_file(state.environ)
        loaded = load_rules(path)
        setattr(state, attribute, [(rule, rule.predicate()) for rule in loaded])
        log.info("keyword rules loaded", extra={"file": str(path), "rules": len(loaded)})

    fixed = [(rule, rule.predicate()) for rule in rules or ()]
    if rules is None:
        router.on_startup(load)
    # The handler's name goes into the outbox ids; "<locals>" in it would be noise.
    reply.__qualname__ = reply.__name__
    when = Predicate(lambda e, c: matched(e, c) is not None, "keywords(rules file)")
    router.on(TextMessage, when=when)(reply)
    return router


def rules_file(environ: Mapping[str, str] = os.environ) -> Path:
    """``KEYWORDS_FILE``, or the packaged ``keywords.toml`` when it is unset or empty."""
    return Path(environ.get(ENV_VAR) or DEFAULT_FILE)


# What ``--handlers examples.keywords.router:router`` runs: it reads its file when it starts.
router = build_router()
