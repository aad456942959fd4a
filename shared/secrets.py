"""Secrets: values that never show themselves, and the ``<NAME>_FILE`` form that reads them.

A variable that holds a secret may instead be given as ``<NAME>_FILE`` naming a file that holds
it, so that a mounted Kubernetes or Docker secret keeps the value out of the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["SECRET_VARIABLES", "Secret", "env_text", "secret_value", "with_secret_files"]


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` are masked, ``get()`` reveals it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding whitespace; None when unset or blank."""
    value = env.get(name)
    return value.strip() if value is not None and value.strip() != "" else None


# Variables that hold secrets (REDIS_URL may carry a password). Each may instead be given as
# <NAME>_FILE naming a file that holds it: a mounted Kubernetes or Docker secret keeps the value
# out of the environment, where `ps e`, crash reports and child processes would see it.
SECRET_VARIABLES = (
    "REDIS_URL",
    "WECOM_SECRET",
    "WECOM_TOKEN",
    "WECOM_ENCODING_AES_KEY",
    "SENDER_API_KEY",
    "CONSOLE_API_KEY",
    "LLM_API_KEY",
)


def secret_value(env: Mapping[str, str], name: str) -> str | None:
    """``name`` from the environment, or read from the file ``<name>_FILE`` names.

    The file's content is treated like the variable's value (surrounding whitespace, so the
    trailing newline of ``echo … > file``, is dropped; empty means unset). Errors name the
    variable and the path, never the content.
    """
    direct, path = env_text(env, name), env_text(env, f"{name}_FILE")
    if path is None:
        return direct
    if direct is not None:
        raise ConfigError(f"{name} and {name}_FILE", "both are set: set only one of them")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise ConfigError(f"{name}_FILE", f"cannot read {path}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}_FILE", f"{path} is not UTF-8 text") from None
    return env_text({name: text}, name)


def with_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment with every ``<NAME>_FILE`` of SECRET_VARIABLES read into ``NAME``."""
    if not any(f"{name}_FILE" in env for name in SECRET_VARIABLES):
        return env
    resolved = dict(env)
    for name in SECRET_VARIABLES:
        value = secret_value(env, name)
        resolved.pop(f"{name}_FILE", None)
        if value is not None:
            resolved[name] = value
    return resolved
