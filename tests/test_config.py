"""Environment and apps file → Settings; every error names the variable; secrets stay masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import Secret, load_settings
from shared.errors import ConfigError

AES = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
ENV = {
    "REDIS_URL": "redis://localhost:6379/0",
    "WECOM_CORP_ID": "wx5823bf96d3bd56c7",
    "WECOM_AGENT_ID": "1000002",
    "WECOM_SECRET": "corp-secret-value-123",
    "WECOM_TOKEN": "QDG6eK",
    "WECOM_ENCODING_AES_KEY": AES,
}


def test_environment_becomes_the_default_app() -> None:
    settings = load_settings(ENV)
    app = settings.app()
    assert app.name == "default"
    assert app.agent_id == 1000002
    assert app.token == Secret("QDG6eK")
    assert settings.prefix == "wecom"
    assert settings.ingress_max_clock_skew == 3600
    assert settings.ingress_max_body == 262144
    assert settings.claim_idle == 15.0
    assert settings.max_deliveries == 5
    settings.require("secret", "token", "encoding_aes_key")


def test_secrets_never_in_repr() -> None:
    settings = load_settings({**ENV, "SENDER_API_KEY": "api-key-0123456789"})
    text = repr(settings) + str(settings.app())
    for secret in ("corp-secret-value-123", "QDG6eK", AES, "api-key-0123456789"):
        assert secret not in text
    assert "**********" in text


@pytest.mark.parametrize(
    ("overrides", "variable", "fragment"),
    [
        ({"WECOM_ENCODING_AES_KEY": AES[:-1]}, "WECOM_ENCODING_AES_KEY", "43 base64"),
        ({"WECOM_ENCODING_AES_KEY": AES[:-1] + "+"}, "WECOM_ENCODING_AES_KEY", "43 base64"),
        ({"WECOM_AGENT_ID": "abc"}, "WECOM_AGENT_ID", "integer"),
        ({"WECOM_TOKEN": "has space"}, "WECOM_TOKEN", "letters or digits"),
        ({"WECOM_CORP_ID": ""}, "WECOM_CORP_ID", "not set"),
        ({"BUS_MAX_DELIVERIES": "0"}, "BUS_MAX_DELIVERIES", "at least"),
        ({"BUS_CLAIM_IDLE": "soon"}, "BUS_CLAIM_IDLE", "float"),
        ({"INGRESS_MAX_CLOCK_SKEW": "-1"}, "INGRESS_MAX_CLOCK_SKEW", "at least"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL", "redis://"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "json or console"),
        ({"SENDER_API_KEY": "short"}, "SENDER_API_KEY", "16"),
        ({"WECOM_API_BASE": "qyapi"}, "WECOM_API_BASE", "http"),
        ({"BUS_PREFIX": "a b"}, "BUS_PREFIX", "letters"),
    ],
)
def test_bad_values_name_the_variable(
    overrides: dict[str, str], variable: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**ENV, **overrides})
    assert info.value.variable == variable
    assert fragment in str(info.value)
    assert "corp-secret-value-123" not in str(info.value)


def test_zero_skew_turns_the_check_off() -> None:
    assert load_settings({**ENV, "INGRESS_MAX_CLOCK_SKEW": "0"}).ingress_max_clock_skew == 0


def test_require_names_missing_secret() -> None:
    env = {k: v for k, v in ENV.items() if k != "WECOM_SECRET"}
    settings = load_settings(env)
    settings.require("token", "encoding_aes_key")
    with pytest.raises(ConfigError, match="WECOM_SECRET: not set"):
        settings.require("secret")


def test_nothing_configured() -> None:
    settings = load_settings({})
    assert settings.apps == {}
    with pytest.raises(ConfigError, match="WECOM_CORP_ID"):
        settings.require("token")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        settings.require_redis()


def test_unknown_app_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown app 'hr'.*default"):
        load_settings(ENV).app("hr")


def _apps_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "apps.toml"
    path.write_text(text, encoding="utf-8")
    return {"WECOM_APPS_FILE": str(path)}


def test_apps_file_defines_several_apps(tmp_path: Path) -> None:
    env = _apps_file(
        tmp_path,
        f"""
[apps.default]
corp_id = "wxcorp"
agent_id = 1000002
secret = "s1"
token = "tok1"
encoding_aes_key = "{AES}"

[apps.hr]
corp_id = "wxcorp"
agent_id = "1000003"
secret = "s2"
""",
    )
    settings = load_settings(env)
    assert sorted(settings.apps) == ["default", "hr"]
    assert settings.app("hr").agent_id == 1000003
    with pytest.raises(ConfigError, match=r"WECOM_APPS_FILE\[apps.hr\].token: not set"):
        settings.require("token")


def test_environment_overrides_the_files_default_app(tmp_path: Path) -> None:
    env = _apps_file(tmp_path, '[apps.default]\ncorp_id = "wxcorp"\nagent_id = 5\n')
    settings = load_settings({**env, "WECOM_AGENT_ID": "7"})
    assert settings.app().agent_id == 7
    assert settings.app().corp_id == "wxcorp"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1\n", "at least one [apps.<name>]"),
        ('[apps.hr]\ncorp_id = "c"\nagent_id = 1\nsecrett = "x"\n', "unknown keys"),
        ('[apps.hr]\ncorp_id = "c"\nagent_id = "x1"\n', "apps.hr].agent_id: must be an integer"),
        ('[apps.HR]\ncorp_id = "c"\nagent_id = 1\n', "app names"),
        ('[apps.hr]\ncorp_id = "c"\nagent_id = 1\nencoding_aes_key = "short"\n', "43 base64"),
    ],
)
def test_bad_apps_file(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="WECOM_APPS_FILE") as info:
        load_settings(_apps_file(tmp_path, text))
    assert fragment in str(info.value)


def test_missing_apps_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({"WECOM_APPS_FILE": "/nonexistent/apps.toml"})
