"""Settings.from_env: defaults, conversion, validation messages, the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from backchannel.settings import ENV_PREFIX, Settings, SettingsError, settings_fields

CONFIGURATION_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def problems_of(environ: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    return caught.value.problems


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.database_url is None
    assert settings.data_dir == Path(".backchannel")
    assert settings.token_endpoint == "http://127.0.0.1:8000/token"
    assert settings.backchannel_endpoint == "http://127.0.0.1:8000/bc-authorize"


def test_values_are_converted_from_their_environment_text() -> None:
    settings = Settings.from_env(
        {
            "BACKCHANNEL_ISSUER": "https://login.example.com/",
            "BACKCHANNEL_DATABASE_URL": "postgresql://bc@db/bc",
            "BACKCHANNEL_PORT": " 9000 ",
            "BACKCHANNEL_ALLOW_INSECURE_URLS": "yes",
            "BACKCHANNEL_HTTP_TIMEOUT": "2.5",
            "BACKCHANNEL_DATA_DIR": "/var/lib/backchannel",
        }
    )
    assert settings.issuer == "https://login.example.com"  # trailing slash dropped
    assert settings.port == 9000
    assert settings.allow_insecure_urls is True
    assert settings.http_timeout == 2.5
    assert settings.data_dir == Path("/var/lib/backchannel")


def test_an_empty_database_url_means_none() -> None:
    assert Settings.from_env({"BACKCHANNEL_DATABASE_URL": ""}).database_url is None


def test_every_unconvertible_value_is_named_at_once() -> None:
    problems = problems_of(
        {
            "BACKCHANNEL_PORT": "99999",
            "BACKCHANNEL_POLL_INTERVAL": "often",
            "BACKCHANNEL_ALLOW_INSECURE_URLS": "maybe",
            "BACKCHANNEL_HTTP_TIMEOUT": "soon",
        }
    )
    assert problems == [
        "BACKCHANNEL_PORT: must be between 0 and 65535, got 99999",
        "BACKCHANNEL_POLL_INTERVAL: expected an integer, got 'often'",
        "BACKCHANNEL_ALLOW_INSECURE_URLS: expected true or false, got 'maybe'",
        "BACKCHANNEL_HTTP_TIMEOUT: expected a number, got 'soon'",
    ]


def test_every_broken_rule_between_values_is_named_at_once() -> None:
    problems = problems_of(
        {
            "BACKCHANNEL_DATABASE_URL": "mysql://db/bc",
            "BACKCHANNEL_DB_POOL_MIN": "20",
            "BACKCHANNEL_DB_POOL_MAX": "10",
            "BACKCHANNEL_DEFAULT_REQUEST_EXPIRY": "3600",
            "BACKCHANNEL_MAX_REQUEST_EXPIRY": "600",
            "BACKCHANNEL_POLL_INTERVAL": "30",
            "BACKCHANNEL_POLL_INTERVAL_MAX": "10",
            "BACKCHANNEL_POLL_LOCK_AFTER": "50",
            "BACKCHANNEL_POLL_DENY_AFTER": "50",
            "BACKCHANNEL_HTTP_TIMEOUT": "0",
            "BACKCHANNEL_LOG_LEVEL": "chatty",
        }
    )
    named = [p.split(":", 1)[0] for p in problems]
    assert named == [
        "BACKCHANNEL_DATABASE_URL",
        "BACKCHANNEL_DB_POOL_MIN",
        "BACKCHANNEL_DEFAULT_REQUEST_EXPIRY",
        "BACKCHANNEL_POLL_INTERVAL",
        "BACKCHANNEL_POLL_LOCK_AFTER",
        "BACKCHANNEL_HTTP_TIMEOUT",
        "BACKCHANNEL_LOG_LEVEL",
    ]


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("login.example.com", "must be an absolute http(s) URL"),
        ("ftp://login.example.com", "must be an absolute http(s) URL"),
        ("https://login.example.com/?tenant=1", "no query, fragment or trailing slash"),
        ("http://login.example.com", "http is only allowed for loopback hosts"),
    ],
)
def test_a_bad_issuer_is_explained(issuer: str, message: str) -> None:
    [problem] = problems_of({"BACKCHANNEL_ISSUER": issuer})
    assert problem.startswith("BACKCHANNEL_ISSUER: ")
    assert message in problem


def test_an_http_issuer_elsewhere_than_loopback_needs_insecure_urls_allowed() -> None:
    settings = Settings.from_env(
        {"BACKCHANNEL_ISSUER": "http://backchannel:8000", "BACKCHANNEL_ALLOW_INSECURE_URLS": "1"}
    )
    assert settings.issuer == "http://backchannel:8000"


def test_the_config_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "backchannel.toml"
    config.write_text('issuer = "https://login.example.com"\nport = 9000\npoll_interval = 3\n')
    settings = Settings.from_env(
        {"BACKCHANNEL_CONFIG_FILE": str(config), "BACKCHANNEL_PORT": "9100"}
    )
    assert settings.issuer == "https://login.example.com"
    assert (settings.port, settings.poll_interval) == (9100, 3)


def test_the_config_file_problems_are_named(tmp_path: Path) -> None:
    config = tmp_path / "backchannel.toml"
    config.write_text('prot = 9000\npoll_interval = "often"\n')
    problems = problems_of({"BACKCHANNEL_CONFIG_FILE": str(config)})
    assert f"{config}: unknown setting 'prot'" in problems
    assert "BACKCHANNEL_POLL_INTERVAL: expected an integer, got 'often'" in problems

    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    [problem] = problems_of({"BACKCHANNEL_CONFIG_FILE": str(broken)})
    assert problem.startswith(f"BACKCHANNEL_CONFIG_FILE={broken}: ")
    [missing] = problems_of({"BACKCHANNEL_CONFIG_FILE": str(tmp_path / "absent.toml")})
    assert "No such file" in missing


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BACKCHANNEL_PORT": "-1", "BACKCHANNEL_CLOCK_SKEW": "x"})
    assert str(caught.value) == (
        "invalid configuration:\n"
        "  - BACKCHANNEL_PORT: must be between 0 and 65535, got -1\n"
        "  - BACKCHANNEL_CLOCK_SKEW: expected an integer, got 'x'"
    )


def test_every_setting_is_documented_in_configuration_md() -> None:
    documented = CONFIGURATION_DOC.read_text()
    missing = [
        f"{ENV_PREFIX}{f.name.upper()}"
        for f in settings_fields()
        if f"`{ENV_PREFIX}{f.name.upper()}`" not in documented
    ]
    assert missing == [], "add these to docs/configuration.md"


def test_settings_remember_which_values_were_given() -> None:
    settings = Settings.from_env({"BACKCHANNEL_PORT": "9000", "BACKCHANNEL_LOG_FORMAT": "json"})
    assert settings.is_given("port") and settings.is_given("log_format")
    assert not settings.is_given("issuer")
    assert settings.replace(port=9001).is_given("port")
    assert not Settings.from_env({}).given


def test_the_event_loop_setting_names_a_known_loop() -> None:
    assert Settings.from_env({"BACKCHANNEL_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    [problem] = problems_of({"BACKCHANNEL_EVENT_LOOP": "trio"})
    assert problem == "BACKCHANNEL_EVENT_LOOP: one of auto, uvloop, asyncio"
