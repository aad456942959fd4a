"""The assistant's settings, read from the environment the service started with.

They are read in the router's startup hook (from ``state.environ``), never at import, so the
module imports with no configuration and a bad value stops the service at start, naming the
variable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigError

__all__ = ["AssistantConfig"]

N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N], low: N) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(name, f"not a number: {raw!r}") from None
    if value < low:
        raise ConfigError(name, f"must be >= {low}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AssistantConfig:
    """Everything the assistant reads; the API key is kept out of ``repr``."""

    base_url: str  # LLM_BASE_URL, e.g. https://api.deepseek.com/v1 (…/chat/completions is added)
    model: str  # LLM_MODEL
    api_key: str = dataclasses.field(default="", repr=False)  # LLM_API_KEY ("" sends none)
    system_prompt: str = ""  # LLM_SYSTEM_PROMPT
    timeout: float = 60.0  # LLM_TIMEOUT: seconds for one model call, the whole stream included
    stream: bool = True  # LLM_STREAM: ask for a streamed answer, sent paragraph by paragraph
    max_tokens: int = 0  # LLM_MAX_TOKENS: 0 leaves it to the model
    max_connections: int = 10  # LLM_MAX_CONNECTIONS: the connection pool's size
    interim_after: float = 5.0  # ASSISTANT_INTERIM_AFTER: seconds before "正在思考…"; 0 = never
    interim_text: str = "正在思考…"  # ASSISTANT_INTERIM_TEXT
    retry_base: float = 5.0  # ASSISTANT_RETRY_BASE: first backoff after a 5xx or timeout
    part_wait: float = 30.0  # ASSISTANT_PART_WAIT: most seconds a part waits for the previous
    part_bytes: int = 1800  # ASSISTANT_PART_BYTES: largest part sent (WeCom takes 2048)
    part_min_bytes: int = 800  # ASSISTANT_PART_MIN_BYTES: least size of a part after the first
    apps: frozenset[str] = frozenset()  # ASSISTANT_APPS: answer only these apps ("" = every app)
    memory_turns: int = 10  # ASSISTANT_MEMORY_TURNS
    memory_bytes: int = 16_000  # ASSISTANT_MEMORY_BYTES
    memory_ttl: float = 86_400.0  # ASSISTANT_MEMORY_TTL: seconds a quiet conversation is kept

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> AssistantConfig:
        base_url = env.get("LLM_BASE_URL", "").strip()
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError("LLM_BASE_URL", "not set or not an http(s) URL")
        if parts.username or parts.password or parts.query:
            raise ConfigError(
                "LLM_BASE_URL", "must carry no credentials or query (use LLM_API_KEY)"
            )
        model = env.get("LLM_MODEL", "").strip()
        if not model:
            raise ConfigError("LLM_MODEL", "not set (e.g. deepseek-chat, qwen-plus, llama3.1)")
        part_bytes = min(_number(env, "ASSISTANT_PART_BYTES", 1800, int, 200), 2048)
        return cls(
            base_url=base_url,
            model=model,
            api_key=env.get("LLM_API_KEY", "").strip(),
            system_prompt=env.get("LLM_SYSTEM_PROMPT", "").strip(),
            timeout=_number(env, "LLM_TIMEOUT", 60.0, float, 1.0),
            stream=_flag(env, "LLM_STREAM", True),
            max_tokens=_number(env, "LLM_MAX_TOKENS", 0, int, 0),
            max_connections=_number(env, "LLM_MAX_CONNECTIONS", 10, int, 1),
            interim_after=_number(env, "ASSISTANT_INTERIM_AFTER", 5.0, float, 0.0),
            interim_text=env.get("ASSISTANT_INTERIM_TEXT", "").strip() or "正在思考…",
            retry_base=_number(env, "ASSISTANT_RETRY_BASE", 5.0, float, 0.1),
            part_wait=_number(env, "ASSISTANT_PART_WAIT", 30.0, float, 0.0),
            part_bytes=part_bytes,
            part_min_bytes=min(part_bytes, _number(env, "ASSISTANT_PART_MIN_BYTES", 800, int, 16)),
            apps=frozenset(
                a.strip() for a in env.get("ASSISTANT_APPS", "").split(",") if a.strip()
            ),
            memory_turns=_number(env, "ASSISTANT_MEMORY_TURNS", 10, int, 1),
            memory_bytes=_number(env, "ASSISTANT_MEMORY_BYTES", 16_000, int, 1000),
            memory_ttl=_number(env, "ASSISTANT_MEMORY_TTL", 86_400.0, float, 60.0),
        )
