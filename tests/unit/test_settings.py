"""Settings rules: every number has bounds on both sides, hosts are hosts."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from garmin2strava.errors import ConfigError
from garmin2strava.settings import Settings, env_name, load_settings


def _numeric(annotation: object) -> bool:
    if annotation in {int, float}:
        return True
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        return any(_numeric(arg) for arg in typing.get_args(annotation))
    return False


NUMBERS = sorted(
    f.name for f in dataclasses.fields(Settings) if _numeric(typing.get_args(f.type)[0])
)


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the developer's (environment or ./.env) reaches these tests."""
    for field in dataclasses.fields(Settings):
        monkeypatch.delenv(env_name(field.name), raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_number_settings_are_found() -> None:
    """The list below is not empty by accident: the known number settings are in it."""
    assert {"http_port", "admin_port", "garmin_backoff_seconds", "strava_subscription_id"} <= set(
        NUMBERS
    )


@pytest.mark.parametrize("field", NUMBERS)
@pytest.mark.parametrize("value", [10**19, -(10**19)], ids=["huge", "negative"])
def test_every_number_setting_is_bounded(field: str, value: int) -> None:
    """Far too large or negative: one ConfigError line naming the environment variable
    (G2S_GARMIN_BACKOFF_SECONDS=1e12 gave an OverflowError on every 429 before)."""
    overrides: dict[str, typing.Any] = {field: value}
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert message.startswith(f"setting {env_name(field)}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("0.0.0.0", "0.0.0.0"),  # noqa: S104 (a value under test, not a bind)
        ("127.0.0.1", "127.0.0.1"),
        ("::", "::"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("Daemon-1.example.COM", "daemon-1.example.com"),
        ("example.com.", "example.com."),
    ],
)
def test_a_host_setting_takes_addresses_and_names(given: str, kept: str) -> None:
    """IP addresses (v6 with or without brackets) and host names are accepted."""
    settings = load_settings(http_host=given, admin_host=given)
    assert settings.http_host == kept
    assert settings.admin_host == kept


@pytest.mark.parametrize(
    "given",
    ["", "bad host", "http://127.0.0.1", "127.0.0.1:8080", "-lead.example", "a..b", "x" * 64],
)
def test_a_host_setting_refuses_what_is_not_a_host(given: str) -> None:
    """A URL, a port, spaces, an empty label, a label over 63 characters: refused."""
    for field in ("http_host", "admin_host"):
        with pytest.raises(ConfigError, match=f"^setting {env_name(field)}: must be an IP"):
            load_settings(**{field: given})


def test_the_admin_listener_is_loopback_by_default() -> None:
    """G2S_ADMIN_HOST defaults to 127.0.0.1, on its own port."""
    settings = load_settings()
    assert settings.admin_host == "127.0.0.1"
    assert settings.admin_port != settings.http_port


@pytest.mark.parametrize(
    ("given", "urls"),
    [
        ("ntfy://alerts", ("ntfy://alerts",)),
        (" ntfy://a,json://h:1/p ", ("ntfy://a", "json://h:1/p")),
        (
            "ntfy://a, mailto://u:p@h?to=a@x.org,b@y.org\n\ttgram://1:T/2",
            ("ntfy://a", "mailto://u:p@h?to=a@x.org,b@y.org", "tgram://1:T/2"),
        ),
        ("ntfy://a;json://b,,", ("ntfy://a", "json://b")),
    ],
)
def test_the_notify_urls_split_on_commas_and_whitespace(given: str, urls: tuple[str, ...]) -> None:
    """Commas or whitespace between URLs; a comma inside one (mailto's list of
    recipients) stays in it, as Apprise reads it."""
    settings = load_settings(notify_urls=given)
    assert settings.notify_url_list == urls
    assert load_settings().notify_url_list == ()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("hunter2-token", "URL 1 of 1 has no scheme://"),
        ("ntfy://ok, hunter2@smtp.example.com", "URL 2 of 2 has no scheme://"),
        ("hunter2:/x", "URL 1 of 1 has no scheme://"),
        (" , ", "give one or more Apprise URLs"),
    ],
)
def test_a_notify_url_without_a_scheme_is_one_line_that_quotes_no_url(
    given: str, message: str
) -> None:
    """G2S_NOTIFY_URLS is a secret: the error line says which URL is wrong by its
    position, never by its text."""
    with pytest.raises(ConfigError) as caught:
        load_settings(notify_urls=given)
    line = str(caught.value)
    assert line.startswith(f"setting G2S_NOTIFY_URLS: {message}")
    assert "\n" not in line
    assert "hunter2" not in line


def test_the_heartbeat_url_is_an_http_url_and_a_secret() -> None:
    """http(s) only (healthchecks.io or a self-hosted one); masked like every secret."""
    settings = load_settings(heartbeat_url="https://hc-ping.com/5f1d-hunter2")
    assert settings.heartbeat_url is not None
    assert settings.heartbeat_url.get_secret_value() == "https://hc-ping.com/5f1d-hunter2"
    assert "hunter2" not in repr(settings)
    for wrong in ("hc-ping.com/5f1d-hunter2", "ftp://hunter2.example/x"):
        with pytest.raises(ConfigError) as caught:
            load_settings(heartbeat_url=wrong)
        assert str(caught.value).startswith("setting G2S_HEARTBEAT_URL: must be an http(s) URL")
        assert "hunter2" not in str(caught.value)
