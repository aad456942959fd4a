"""The fake WeCom's configuration and its in-memory state: tokens, media, send windows, logs.

The fake is one process on one event loop, so the state is plain Python objects changed only
between awaits; no locks. Every record carries ``seq`` (identity) and ``rev`` (last change) from
one counter, so a poller asking for ``since=<rev>`` also sees records that changed later (a
recall, a card update, a callback's next attempt).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from shared.config import AppSettings, Secret
from shared.errors import ConfigError

__all__ = [
    "DEFAULT_MEMBERS",
    "CallbackRecord",
    "FakeApp",
    "FakeConfig",
    "FakeState",
    "Media",
    "ResponseCode",
    "SendRecord",
    "Token",
]

DEFAULT_MEMBERS: tuple[str, ...] = ("alice", "bob", "carol", "dave", "erin")


class FakeApp(msgspec.Struct, frozen=True, kw_only=True):
    """One self-built app as WeCom knows it; the secrets are masked in every repr."""

    name: str
    corp_id: str
    agent_id: int
    secret: Secret
    token: Secret
    encoding_aes_key: Secret
    callback_url: str | None = None
    closed: bool = False  # disabled in 应用管理: agent/get answers close=1

    @classmethod
    def from_settings(cls, app: AppSettings, callback_url: str | None) -> FakeApp:
        missing = [f for f in ("secret", "token", "encoding_aes_key") if getattr(app, f) is None]
        if missing:
            raise ConfigError(app.variable(missing[0]), "not set (the fake WeCom needs it)")
        assert app.secret and app.token and app.encoding_aes_key
        return cls(
            name=app.name,
            corp_id=app.corp_id,
            agent_id=app.agent_id,
            secret=app.secret,
            token=app.token,
            encoding_aes_key=app.encoding_aes_key,
            callback_url=callback_url,
        )


class FakeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the fake serves. ``clock`` is injectable so tests move time instead of sleeping."""

    apps: tuple[FakeApp, ...]
    members: tuple[str, ...] = DEFAULT_MEMBERS
    unlicensed: frozenset[str] = frozenset()
    parties: Mapping[int, tuple[str, ...]] | None = None  # None: department 1 holds everyone
    tags: Mapping[int, tuple[str, ...]] | None = None
    member_names: Mapping[str, str] | None = None  # userid → name (default: Userid)
    party_names: Mapping[int, str] | None = None  # department id → name
    expires_in: int = 7200
    per_minute: int = 30  # per app per member, sliding 60 s; excess silently dropped
    per_hour: int = 1000  # per app per member, sliding 3600 s
    callback_timeout: float = 5.0  # WeCom gives up on a callback after five seconds
    callback_retries: int = 3
    callback_retry_delay: float = 1.0
    verify_timeout: float = 1.0  # the console wants the echo within one second
    max_records: int = 100_000  # oldest send/callback records are forgotten beyond this
    clock: Callable[[], float] = time.time


@dataclass(slots=True)
class Token:
    app: str
    value: str
    expires_at: float
    revoked: bool = False


@dataclass(slots=True)
class Media:
    media_id: str
    app: str
    type: str
    filename: str
    size: int
    created_at: float
    content: bytes = b""  # what media/get answers
    content_type: str = "application/octet-stream"


@dataclass(slots=True)
class ResponseCode:
    """A response_code handed out (send answer or template_card_event); usable once."""

    app: str
    issued_at: float
    record: SendRecord | None  # the card it updates, when the fake knows it


@dataclass(slots=True, kw_only=True)
class SendRecord:
    """One request to message/send (or a fault answered in its place), as the fake saw it."""

    seq: int
    rev: int
    time: float
    app: str | None
    status: str  # delivered | partial | dropped | suppressed | rejected | faulted
    body: Any
    errcode: int = 0
    errmsg: str = "ok"
    msgid: str | None = None
    response_code: str | None = None
    recipients: list[str] = field(default_factory=list)  # licensed members it was meant for
    delivered: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    invaliduser: list[str] = field(default_factory=list)
    invalidparty: list[str] = field(default_factory=list)
    invalidtag: list[str] = field(default_factory=list)
    unlicenseduser: list[str] = field(default_factory=list)
    duplicate_of: int | None = None  # seq of the delivered original, when suppressed
    recalled: bool = False
    card_update: Any = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True, kw_only=True)
class CallbackRecord:
    """One callback pushed to an app's URL, with every attempt (WeCom retries)."""

    seq: int
    rev: int
    time: float
    app: str
    from_user: str
    kind: str  # the MsgType: text, location, event
    content: str | None
    event: str | None
    event_key: str | None
    msg_id: int | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ok: bool | None = None  # None while in flight

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FakeState:
    """Everything the fake remembers; ``reset()`` forgets it all (apps and members stay)."""

    def __init__(self, config: FakeConfig) -> None:
        if not config.apps:
            raise ValueError("the fake WeCom needs at least one app")
        names = [a.name for a in config.apps]
        if len(set(names)) != len(names):
            raise ValueError("app names must be unique")
        self.config = config
        self.clock = config.clock
        self.apps = {a.name: a for a in config.apps}
        self.members = tuple(dict.fromkeys(m.lower() for m in config.members))
        self.member_set = frozenset(self.members)
        self.unlicensed = frozenset(m.lower() for m in config.unlicensed)
        parties = config.parties if config.parties is not None else {1: self.members}
        self.parties = {int(k): tuple(m.lower() for m in v) for k, v in parties.items()}
        self.tags = {int(k): tuple(m.lower() for m in v) for k, v in (config.tags or {}).items()}
        self.reset()

    def member_name(self, userid: str) -> str:
        return (self.config.member_names or {}).get(userid) or userid.capitalize()

    def party_name(self, pid: int) -> str:
        default = "Head Office" if pid == 1 else f"Department {pid}"
        return (self.config.party_names or {}).get(pid, default)

    def reset(self) -> None:
        self.rev = 0
        self.tokens: dict[str, Token] = {}
        self.current: dict[str, Token] = {}  # app name → the token gettoken hands out
        self.media: dict[str, Media] = {}
        self.sends: list[SendRecord] = []
        self.by_msgid: dict[str, SendRecord] = {}
        self.response_codes: dict[str, ResponseCode] = {}
        self.callbacks: list[CallbackRecord] = []
        self.windows: dict[tuple[str, str], deque[float]] = {}
        self.recent: dict[tuple[str, str], SendRecord] = {}  # (app, body key) → delivered
        self.gettoken_calls: dict[str, int] = dict.fromkeys(self.apps, 0)
        self.gettoken_failures = 0
        self.faults_applied = 0
        self.api_calls: dict[str, int] = {}  # /cgi-bin/<path> → requests received

    def store_media(
        self, app: str, kind: str, filename: str, content: bytes, content_type: str
    ) -> Media:
        """Keep an uploaded (or a member's) file for media/get and message/send."""
        media_id = secrets.token_urlsafe(48)
        media = Media(
            media_id, app, kind, filename, len(content), self.clock(), content, content_type
        )
        self.media[media_id] = media
        return media

    def bump(self) -> int:
        self.rev += 1
        return self.rev

    # ------------------------------------------------------------ tokens

    def get_token(self, corp_id: str, secret: str) -> Token | int:
        """The app's valid token (WeCom hands out the same one until it expires), or errcode."""
        corp_apps = [a for a in self.apps.values() if a.corp_id == corp_id]
        if not corp_apps:
            self.gettoken_failures += 1
            return 40013
        app = next((a for a in corp_apps if secrets.compare_digest(a.secret.get(), secret)), None)
        if app is None:
            self.gettoken_failures += 1
            return 40001
        self.gettoken_calls[app.name] += 1
        now = self.clock()
        token = self.current.get(app.name)
        if token is None or token.revoked or token.expires_at <= now:
            token = Token(app.name, secrets.token_urlsafe(48), now + self.config.expires_in)
            self.tokens[token.value] = token
            self.current[app.name] = token
        return token

    def app_for_token(self, value: str | None) -> FakeApp | int:
        if not value:
            return 41001
        token = self.tokens.get(value)
        if token is None:
            return 40014
        if token.revoked or token.expires_at <= self.clock():
            return 42001
        return self.apps[token.app]

    def revoke_tokens(self) -> int:
        """Every token handed out so far now answers 42001; returns how many were live."""
        live = [t for t in self.tokens.values() if not t.revoked]
        for token in live:
            token.revoked = True
        return len(live)

    # ------------------------------------------------------------ sending

    def admit(self, app: str, member: str) -> bool:
        """Take a delivery slot for ``member``, or False when WeCom would drop the message."""
        now = self.clock()
        window = self.windows.setdefault((app, member), deque())
        while window and window[0] <= now - 3600:
            window.popleft()
        last_minute = 0
        for stamp in reversed(window):
            if stamp <= now - 60:
                break
            last_minute += 1
        if last_minute >= self.config.per_minute or len(window) >= self.config.per_hour:
            return False
        window.append(now)
        return True

    def new_send(self, app: str | None, body: Any, status: str, **fields: Any) -> SendRecord:
        rev = self.bump()
        record = SendRecord(seq=rev, rev=rev, time=self.clock(), app=app, status=status, body=body)
        for name, value in fields.items():
            setattr(record, name, value)
        self.sends.append(record)
        if record.msgid and status != "suppressed":  # a suppressed send names the original
            self.by_msgid[record.msgid] = record
        if len(self.sends) > self.config.max_records:
            self._forget_oldest()
        return record

    def _forget_oldest(self) -> None:
        # A long benchmark must not grow the fake without bound: drop the oldest tenth.
        cut = max(1, len(self.sends) // 10)
        for record in self.sends[:cut]:
            if record.msgid and self.by_msgid.get(record.msgid) is record:
                del self.by_msgid[record.msgid]
        del self.sends[:cut]
        horizon = self.clock() - 4 * 3600  # duplicate_check_interval is at most 4 h
        self.recent = {k: r for k, r in self.recent.items() if r.time > horizon}

    def touch(self, record: SendRecord | CallbackRecord) -> None:
        record.rev = self.bump()

    def new_callback(self, app: str, **fields: Any) -> CallbackRecord:
        rev = self.bump()
        record = CallbackRecord(seq=rev, rev=rev, time=self.clock(), app=app, **fields)
        self.callbacks.append(record)
        if len(self.callbacks) > self.config.max_records:
            del self.callbacks[: max(1, len(self.callbacks) // 10)]
        return record

    def stats(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for record in self.sends:
            counts[record.status] = counts.get(record.status, 0) + 1
        return {
            "gettoken": dict(self.gettoken_calls),
            "gettoken_failures": self.gettoken_failures,
            "sends": len(self.sends),
            "by_status": counts,
            "delivered": sum(len(r.delivered) for r in self.sends),
            "dropped": sum(len(r.dropped) for r in self.sends),
            "suppressed": counts.get("suppressed", 0),
            "callbacks": len(self.callbacks),
            "faults_applied": self.faults_applied,
            "media": len(self.media),
            "api_calls": dict(self.api_calls),
        }
