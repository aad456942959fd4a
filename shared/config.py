"""Configuration: the environment (and an optional apps file) read once into frozen settings.

Every error is a ``ConfigError`` naming the variable and what is wrong. Secrets are held in
``Secret`` so that no repr, log line or error message can show them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from shared.connection import parse_redis_url
from shared.errors import ConfigError
from shared.layout import check_partitions, check_prefix, check_topology
from shared.secrets import SECRET_VARIABLES, Secret, secret_value, with_secret_files
from shared.secrets import env_text as _get

__all__ = [
    "GATEWAY_APIS",
    "SECRET_VARIABLES",
    "AppSettings",
    "BotSettings",
    "Secret",
    "Settings",
    "load_settings",
    "secret_value",
]

T = TypeVar("T")

_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
_TOKEN = re.compile(r"[A-Za-z0-9]{1,32}")
_APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_API_PATH = re.compile(r"[a-z0-9_]+(?:/[a-z0-9_]+)*")
# What the sender's gateway may call unless SENDER_GATEWAY_APIS says otherwise: reads only.
GATEWAY_APIS = frozenset(
    {
        "user/get",
        "user/simplelist",
        "user/list_id",
        "department/list",
        "department/simplelist",
        "department/get",
        "tag/list",
        "tag/get",
        "media/get",
        "agent/get",
        "auth/getuserinfo",
        "get_api_domain_ip",
    }
)


class AppSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One self-built app: its CorpID, AgentId and the secrets of each side."""

    name: str
    corp_id: str
    agent_id: int
    secret: Secret | None = None  # sender: gettoken
    token: Secret | None = None  # ingress: signature
    encoding_aes_key: Secret | None = None  # ingress: AES key
    source: str = "env"  # where it was defined, for error messages

    def variable(self, field: str) -> str:
        """The name an operator should fix, e.g. WECOM_TOKEN or WECOM_APPS_FILE[apps.hr].token."""
        return _variable(self.source, self.name, field)


class BotSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One WeCom AI bot (智能机器人) of WECOM_BOTS_FILE; read and checked by shared.aibot.config."""

    name: str
    token: Secret
    encoding_aes_key: Secret
    receive_id: str = ""  # "" for an enterprise's own bot (docs/aibot.md)
    welcome: str = ""  # passive reply to enter_chat; "" = empty reply
    stream_ttl: int = 600  # seconds a stream's state lives
    answer_timeout: int = 330  # an unfinished stream is ended on the first refresh after this
    no_answer_text: str = "Sorry, no answer this time."
    expired_text: str = "This reply is no longer available."


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the services read, with the defaults the README's Configuration table lists."""

    redis_url: str | None = None
    prefix: str = "wecom"
    api_base: str = "https://qyapi.weixin.qq.com"
    apps: dict[str, AppSettings] = msgspec.field(default_factory=dict)
    stream_maxlen: int = 100_000
    claim_idle: float = 15.0
    handler_timeout: float = 300.0  # BUS_HANDLER_TIMEOUT: a handler running longer fails
    max_deliveries: int = 5
    ingress_max_clock_skew: int = 3600
    ingress_max_body: int = 262_144
    ingress_trusted_proxies: str = "127.0.0.1"
    sender_api_key: Secret | None = None
    console_api_key: Secret | None = None  # the operator console's login key
    sender_daily_quota: int = 0  # person-times per app per day; 0 = no quota of ours
    sender_rate_limited_wait: float = 60.0  # least wait after errcode 45009
    # when sends carry enable_duplicate_check: on a redelivery, on every send, or never
    sender_duplicate_check: Literal["redelivery", "always", "off"] = "redelivery"
    sender_circuit_probe: float = 60.0  # seconds between probes of an app paused by config
    sender_url: str | None = None  # SENDER_URL: where consumers reach the gateway (ctx.wecom)
    gateway_apis: frozenset[str] = GATEWAY_APIS  # SENDER_GATEWAY_APIS
    gateway_per_minute: int = 9000  # per corp and API; WeCom allows 10,000
    gateway_per_hour: int = 140_000  # per corp and API; WeCom allows 150,000
    wecom_proxy: str | None = None  # WECOM_HTTPS_PROXY, else HTTPS_PROXY: WeCom calls' proxy
    drain_timeout: float = 20.0
    partitions: int = 1  # BUS_PARTITIONS: events and outbox split into this many partitions
    min_replicas: int = 0  # BUS_MIN_REPLICAS: acknowledge only once this many replicas have it
    min_replicas_timeout: int = 1000  # BUS_MIN_REPLICAS_TIMEOUT (ms): how long WAIT waits
    order_wait: float = 10.0  # BUS_ORDER_WAIT (s): a member's entry waits this long for the last
    responder_other_reply: str = ""  # answer to messages no behaviour answers ("" = none)
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    bots: dict[str, BotSettings] = msgspec.field(default_factory=dict)  # WECOM_BOTS_FILE

    def app(self, name: str = "default") -> AppSettings:
        try:
            return self.apps[name]
        except KeyError:
            known = ", ".join(sorted(self.apps)) or "none configured"
            raise ConfigError("app", f"unknown app {name!r} (known: {known})") from None

    def require(self, *fields: Literal["secret", "token", "encoding_aes_key"]) -> None:
        """Fail at start, naming the variable, unless every app has these secrets."""
        if not self.apps:
            raise ConfigError("WECOM_CORP_ID", "not set (and no WECOM_APPS_FILE)")
        for app in self.apps.values():
            for field in fields:
                if getattr(app, field) is None:
                    raise ConfigError(app.variable(field), "not set")

    def require_redis(self) -> str:
        """REDIS_URL, checked against the bus layout: a service stops at start, with one line,
        where every multi-key script would fail (CROSSSLOT)."""
        if not self.redis_url:
            raise ConfigError("REDIS_URL", "not set (e.g. redis://redis:6379/0)")
        check_topology(
            parse_redis_url(self.redis_url).topology,
            partitions=self.partitions,
            prefix=self.prefix,
        )
        return self.redis_url


_BUS = Settings()  # the BUS_* defaults, stated once (ConsumerOptions shares them)


def _number(
    env: Mapping[str, str], name: str, default: T, cast: Callable[[str], T], low: float
) -> T:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(name, f"must be a {cast.__name__}, got {raw!r}") from None
    if value < low:  # type: ignore[operator]
        raise ConfigError(name, f"must be at least {low}, got {raw!r}")
    return value


_ENV_APP_FIELDS = {
    "corp_id": "WECOM_CORP_ID",
    "agent_id": "WECOM_AGENT_ID",
    "secret": "WECOM_SECRET",
    "token": "WECOM_TOKEN",
    "encoding_aes_key": "WECOM_ENCODING_AES_KEY",
}


def _variable(source: str, name: str, field: str) -> str:
    if source == "env":
        return _ENV_APP_FIELDS.get(field, f"WECOM_{field.upper()}")
    return f"WECOM_APPS_FILE[apps.{name}].{field}"


def _check_app(source: str, name: str, raw: Mapping[str, Any]) -> AppSettings:
    def variable(field: str) -> str:
        return _variable(source, name, field)

    if not _APP_NAME.fullmatch(name):
        raise ConfigError(variable("name"), "app names are 1-32 of a-z, 0-9, '_' and '-'")
    corp_id = raw.get("corp_id")
    if not isinstance(corp_id, str) or not corp_id.strip():
        raise ConfigError(variable("corp_id"), "not set")
    agent_raw = raw.get("agent_id")
    if agent_raw is None:
        raise ConfigError(variable("agent_id"), "not set")
    try:
        agent_id = int(str(agent_raw).strip())
    except ValueError:
        raise ConfigError(variable("agent_id"), "must be an integer (the app's AgentId)") from None
    secrets: dict[str, Secret | None] = {}
    for field in ("secret", "token", "encoding_aes_key"):
        value = raw.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            secrets[field] = None
            continue
        if not isinstance(value, str):
            raise ConfigError(variable(field), "must be a string")
        value = value.strip()
        if field == "encoding_aes_key" and not _AES_KEY.fullmatch(value):
            raise ConfigError(
                variable(field), f"must be 43 base64 characters [A-Za-z0-9], got {len(value)}"
            )
        if field == "token" and not _TOKEN.fullmatch(value):
            raise ConfigError(variable(field), "must be 1-32 English letters or digits")
        secrets[field] = Secret(value)
    return AppSettings(
        name=name, corp_id=corp_id.strip(), agent_id=agent_id, source=source, **secrets
    )


def toml_tables(path_str: str, variable: str, key: str) -> dict[str, Any]:
    """The ``[<key>.<name>]`` tables of the TOML file ``variable`` names (apps, bots)."""
    try:
        data = tomllib.loads(Path(path_str).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(variable, f"no such file: {path_str}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(variable, f"not valid TOML: {exc}") from None
    table = data.get(key)
    if not isinstance(table, dict) or not table:
        raise ConfigError(variable, f"needs at least one [{key}.<name>] table")
    return table


def _apps_from_file(path_str: str) -> dict[str, AppSettings]:
    table = toml_tables(path_str, "WECOM_APPS_FILE", "apps")
    apps: dict[str, AppSettings] = {}
    for name, raw in table.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"WECOM_APPS_FILE[apps.{name}]", "must be a table")
        unknown = set(raw) - {"corp_id", "agent_id", "secret", "token", "encoding_aes_key"}
        if unknown:
            raise ConfigError(f"WECOM_APPS_FILE[apps.{name}]", f"unknown keys {sorted(unknown)}")
        apps[name] = _check_app("file", name, raw)
    return apps


def _duplicate_check(env: Mapping[str, str]) -> Literal["redelivery", "always", "off"]:
    value = (_get(env, "SENDER_DUPLICATE_CHECK") or "redelivery").lower()
    if value == "always":
        return "always"
    if value == "off":
        return "off"
    if value == "redelivery":
        return "redelivery"
    raise ConfigError("SENDER_DUPLICATE_CHECK", "must be redelivery, always or off")


def _api_key(name: str, value: str | None) -> Secret | None:
    """A key that guards an HTTP endpoint: unset, or at least 16 characters."""
    if value is not None and len(value) < 16:
        raise ConfigError(name, "must be at least 16 characters")
    return Secret(value) if value else None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable once; raise ConfigError naming the first bad one."""
    env = with_secret_files(os.environ if environ is None else environ)
    apps: dict[str, AppSettings] = {}
    if apps_file := _get(env, "WECOM_APPS_FILE"):
        apps = _apps_from_file(apps_file)
    env_app = {field: _get(env, var) for field, var in _ENV_APP_FIELDS.items()}
    if any(env_app.values()):
        # The WECOM_* variables describe the app named "default" (over the file's, if any).
        base = apps.get("default")
        merged: dict[str, Any] = {}
        if base is not None:
            merged = {f: getattr(base, f) for f in _ENV_APP_FIELDS}
            merged = {k: v.get() if isinstance(v, Secret) else v for k, v in merged.items()}
        merged.update({k: v for k, v in env_app.items() if v is not None})
        apps["default"] = _check_app("env", "default", merged)

    level = (_get(env, "LOG_LEVEL") or "info").lower()
    if level not in _LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(_LOG_LEVELS)}")
    log_format = (_get(env, "LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "console"):
        raise ConfigError("LOG_FORMAT", "must be json or console")
    prefix = _get(env, "BUS_PREFIX") or "wecom"
    partitions = _number(env, "BUS_PARTITIONS", 1, int, 1)
    check_partitions(partitions, check_prefix(prefix))
    api_base = (_get(env, "WECOM_API_BASE") or "https://qyapi.weixin.qq.com").rstrip("/")
    if not api_base.startswith(("http://", "https://")):
        raise ConfigError("WECOM_API_BASE", "must start with http:// or https://")
    redis_url = _get(env, "REDIS_URL")
    if redis_url:
        parse_redis_url(redis_url)  # one line naming REDIS_URL when the form is wrong
    api_key = _api_key("SENDER_API_KEY", _get(env, "SENDER_API_KEY"))
    console_key = _api_key("CONSOLE_API_KEY", _get(env, "CONSOLE_API_KEY"))

    return Settings(
        redis_url=redis_url,
        prefix=prefix,
        api_base=api_base,
        apps=apps,
        stream_maxlen=_number(env, "BUS_STREAM_MAXLEN", _BUS.stream_maxlen, int, 1000),
        claim_idle=_number(env, "BUS_CLAIM_IDLE", _BUS.claim_idle, float, 0.1),
        handler_timeout=_number(env, "BUS_HANDLER_TIMEOUT", _BUS.handler_timeout, float, 0.1),
        max_deliveries=_number(env, "BUS_MAX_DELIVERIES", _BUS.max_deliveries, int, 1),
        ingress_max_clock_skew=_number(env, "INGRESS_MAX_CLOCK_SKEW", 3600, int, 0),
        ingress_max_body=_number(env, "INGRESS_MAX_BODY", 262_144, int, 1024),
        ingress_trusted_proxies=_get(env, "INGRESS_TRUSTED_PROXIES") or "127.0.0.1",
        sender_api_key=api_key,
        console_api_key=console_key,
        sender_daily_quota=_number(env, "SENDER_DAILY_QUOTA", 0, int, 0),
        sender_rate_limited_wait=_number(env, "SENDER_RATE_LIMITED_WAIT", 60.0, float, 0),
        sender_duplicate_check=_duplicate_check(env),
        sender_circuit_probe=_number(env, "SENDER_CIRCUIT_PROBE", 60.0, float, 1),
        drain_timeout=_number(env, "BUS_DRAIN_TIMEOUT", _BUS.drain_timeout, float, 0),
        partitions=partitions,
        min_replicas=_number(env, "BUS_MIN_REPLICAS", 0, int, 0),
        min_replicas_timeout=_number(env, "BUS_MIN_REPLICAS_TIMEOUT", 1000, int, 1),
        order_wait=_number(env, "BUS_ORDER_WAIT", _BUS.order_wait, float, 0),
        responder_other_reply=_get(env, "RESPONDER_OTHER_REPLY") or "",
        log_level=level,
        log_format="json" if log_format == "json" else "console",
        bots=_bots(_get(env, "WECOM_BOTS_FILE")),
        **_gateway(env),
    )


def _gateway(env: Mapping[str, str]) -> dict[str, Any]:
    """SENDER_URL, SENDER_GATEWAY_APIS, the gateway's per-API limits and the WeCom proxy."""
    url = _get(env, "SENDER_URL")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError("SENDER_URL", "must start with http:// or https:// (http://sender:8082)")
    apis = GATEWAY_APIS
    if (raw := _get(env, "SENDER_GATEWAY_APIS")) is not None:
        apis = frozenset(p.strip().strip("/") for p in raw.split(",") if p.strip())
        if bad := sorted(p for p in apis if not _API_PATH.fullmatch(p)):
            raise ConfigError("SENDER_GATEWAY_APIS", f"{bad[0]!r} is not an API path like user/get")
    # HTTPS_PROXY is the platform's standard variable (not ours to deploy): honoured as is.
    standard = (env.get("HTTPS_PROXY") or env.get("https_proxy") or "").strip() or None
    proxy = _get(env, "WECOM_HTTPS_PROXY") or standard
    if proxy is not None and not proxy.startswith(("http://", "https://")):
        raise ConfigError("WECOM_HTTPS_PROXY", "must be a proxy URL like http://10.0.0.5:3128")
    return {
        "sender_url": url.rstrip("/") if url else None,
        "gateway_apis": apis,
        "gateway_per_minute": _number(env, "SENDER_GATEWAY_PER_MINUTE", 9000, int, 1),
        "gateway_per_hour": _number(env, "SENDER_GATEWAY_PER_HOUR", 140_000, int, 1),
        "wecom_proxy": proxy,
    }


def _bots(path: str | None) -> dict[str, BotSettings]:
    from shared.aibot.config import load_bots  # it imports Secret from here

    return load_bots(path)
