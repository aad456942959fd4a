"""Secrets given as files: every secret variable also accepts ``<NAME>_FILE`` (a mounted secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import SECRET_VARIABLES, Secret, load_settings, secret_value
from shared.errors import ConfigError

TOKEN = "FileToken0123456789"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
BASE = {"WECOM_CORP_ID": "ww1234567890abcdef", "WECOM_AGENT_ID": "1000002"}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_every_secret_of_the_settings_is_read_from_its_file(tmp_path: Path) -> None:
    env = {
        **BASE,
        "WECOM_TOKEN_FILE": write(tmp_path, "token", TOKEN + "\n"),  # as `echo … > file` writes
        "WECOM_ENCODING_AES_KEY_FILE": write(tmp_path, "aes", AES_KEY + "\r\n"),
        "WECOM_SECRET_FILE": write(tmp_path, "secret", "corp-secret-from-a-file\n"),
        "SENDER_API_KEY_FILE": write(tmp_path, "api", "an-api-key-of-24-chars!!"),
        "REDIS_URL_FILE": write(tmp_path, "url", "redis://:pw@redis:6379/0\n"),
    }
    settings = load_settings(env)
    app = settings.app()
    assert app.token == Secret(TOKEN)
    assert app.encoding_aes_key == Secret(AES_KEY)
    assert app.secret == Secret("corp-secret-from-a-file")
    assert settings.sender_api_key == Secret("an-api-key-of-24-chars!!")
    assert settings.redis_url == "redis://:pw@redis:6379/0"


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_each_secret_variable_has_a_file_form(tmp_path: Path, name: str) -> None:
    assert secret_value({name: " direct "}, name) == "direct"
    path = write(tmp_path, "value", "from-file\n")
    assert secret_value({f"{name}_FILE": path}, name) == "from-file"
    assert secret_value({f"{name}_FILE": write(tmp_path, "empty", "\n")}, name) is None
    assert secret_value({}, name) is None


def test_values_read_from_files_are_checked_like_variables(tmp_path: Path) -> None:
    env = {**BASE, "WECOM_ENCODING_AES_KEY_FILE": write(tmp_path, "aes", "too-short\n")}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "WECOM_ENCODING_AES_KEY"
    assert "too-short" not in str(caught.value)


def test_both_forms_set_is_an_error_naming_both(tmp_path: Path) -> None:
    env = {**BASE, "WECOM_SECRET": "a", "WECOM_SECRET_FILE": write(tmp_path, "s", "hidden-value")}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "WECOM_SECRET and WECOM_SECRET_FILE"
    assert "hidden-value" not in str(caught.value)


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_an_unreadable_file_names_the_variable_never_the_content(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xffhidden-value\xfe")
    env = {**BASE, "SENDER_API_KEY_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == "SENDER_API_KEY_FILE"
    message = str(caught.value)
    assert message.startswith("SENDER_API_KEY_FILE: ") and str(path) in message
    assert "hidden" not in message and "\\xff" not in message


def test_without_any_file_variable_the_environment_is_read_as_before() -> None:
    settings = load_settings({**BASE, "WECOM_TOKEN": TOKEN})
    assert settings.app().token == Secret(TOKEN)
