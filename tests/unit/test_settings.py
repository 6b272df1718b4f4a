"""Settings rules: every number has bounds on both sides, hosts are hosts, the plain
values a user writes are read (from the environment in any case, or `.env`), and a
wrong one is one line naming its variable."""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from garmin2strava.domain.strava_urls import StravaUrls
from garmin2strava.errors import ConfigError
from garmin2strava.settings import Settings, env_name, load_settings


def _numeric(annotation: object) -> bool:
    if annotation in {int, float}:
        return True
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        return any(_numeric(arg) for arg in typing.get_args(annotation))
    return False


NUMBERS = sorted(name for name, f in Settings.model_fields.items() if _numeric(f.annotation))
VARIABLES = {env_name(name).lower() for name in Settings.model_fields}
WEBHOOK_SECRET = "A" * 19 + "-_b0"


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the developer's (environment, in any case, or ./.env) reaches
    these tests."""
    for name in list(os.environ):
        if name.lower() in VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_field_names_its_own_variable() -> None:
    """Each field has its environment variable (credentials under their own names, the
    rest under G2S_), and no two share one."""
    names = [env_name(name) for name in Settings.model_fields]
    assert len(set(names)) == len(names)
    assert all(name.startswith(("G2S_", "STRAVA_", "GARMIN_")) for name in names)
    assert env_name("strava_client_secret") == "STRAVA_CLIENT_SECRET"
    assert env_name("lookback") == "G2S_LOOKBACK"


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


def _value(settings: Settings, field: str) -> object:
    value = getattr(settings, field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# (variable, what a user writes, field, the value read)
PLAIN = [
    ("G2S_LOOKBACK", "1", "lookback", 1),
    ("G2S_LOOKBACK", "1000", "lookback", 1000),
    ("G2S_MATCH_TOLERANCE_SECONDS", "0", "match_tolerance_seconds", 0),
    ("G2S_GARMIN_BACKOFF_SECONDS", "604800", "garmin_backoff_seconds", 604_800),
    ("STRAVA_CLIENT_ID", str(2**63 - 1), "strava_client_id", 2**63 - 1),
    ("G2S_UPLOAD_POLL_DELAY_SECONDS", "0.5", "upload_poll_delay_seconds", 0.5),
    ("G2S_UPLOAD_POLL_DELAY_SECONDS", "30", "upload_poll_delay_seconds", 30.0),
    ("G2S_MIRROR_RECONCILE_HOURS", "720", "mirror_reconcile_hours", 720.0),
    ("G2S_MIRROR_SWEEP_DAYS", "0", "mirror_sweep_days", 0.0),
    ("G2S_MIRROR_SWEEP_DAYS", "0.5", "mirror_sweep_days", 0.5),
    ("G2S_MIRROR_SWEEP_DAYS", "365", "mirror_sweep_days", 365.0),
    ("G2S_STORE", "dynamodb", "store", "dynamodb"),
    ("G2S_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
    ("G2S_LOG_FORMAT", "text", "log_format", "text"),
    ("G2S_USER_ID", "a.b@c-d_e", "user_id", "a.b@c-d_e"),
    ("G2S_USER_ID", "x" * 64, "user_id", "x" * 64),
    (
        "G2S_ACTIVITY_TYPES",
        " Running ,,trail_running",
        "activity_types",
        ("running", "trail_running"),
    ),
    ("G2S_ACTIVITY_TYPES", "*", "activity_types", ("*",)),
    ("G2S_MIRROR_STREAMS", "time, HeartRate,time", "mirror_streams", ("time", "heartrate")),
    ("G2S_STRAVA_BASE_URL", "http://127.0.0.1:8123/", "strava_base_url", "http://127.0.0.1:8123"),
    ("G2S_GARMIN_BASE_URL", "https://example.com//", "garmin_base_url", "https://example.com"),
    ("G2S_DB_PATH", "relative/g2s.sqlite3", "db_path", Path("relative/g2s.sqlite3")),
    ("G2S_WEBHOOK_SECRET", WEBHOOK_SECRET, "webhook_secret", WEBHOOK_SECRET),
    # Token JSON: text, never decoded.
    (
        "GARMIN_TOKENS",
        '{"di_token": "x", "n": [1]}',
        "garmin_tokens",
        '{"di_token": "x", "n": [1]}',
    ),
    ("STRAVA_CLIENT_SECRET", "s3cret/+=", "strava_client_secret", "s3cret/+="),
    ("G2S_UPLOAD_DESCRIPTION", "ünïcode", "upload_description", "ünïcode"),
    ("G2S_GEAR_MAP", " Pegasus 41=g123; 4f51=b9 ", "gear_map", "Pegasus 41=g123; 4f51=b9"),
    ("G2S_HIDE_FROM_HOME", "indoor, under:5km", "hide_from_home", "indoor, under:5km"),
    ("G2S_CARRY_GARMIN_EDITS", "false", "carry_garmin_edits", False),
]


@pytest.mark.parametrize("spelling", [str.upper, str.lower, str.title])
@pytest.mark.parametrize(("variable", "text", "field", "expected"), PLAIN)
def test_a_plain_value_is_read_from_the_environment_in_any_case(  # noqa: PLR0917 (the table's columns)
    monkeypatch: pytest.MonkeyPatch,
    spelling: typing.Callable[[str], str],
    variable: str,
    text: str,
    field: str,
    expected: object,
) -> None:
    """Bounds included, choices spelled exactly, lists split, URLs trimmed: read as
    written, under the variable's name in upper, lower or mixed case."""
    monkeypatch.setenv(spelling(variable), text)
    assert _value(load_settings(), field) == expected


# (variable, what a user writes, the whole error line after "setting VARIABLE: ")
WRONG = [
    ("G2S_LOOKBACK", "0", "Input should be greater than or equal to 1"),
    ("G2S_LOOKBACK", "1001", "Input should be less than or equal to 1000"),
    ("G2S_LOOKBACK", "", "Input should be a valid integer, unable to parse string as an integer"),
    (
        "G2S_MAX_ATTEMPTS",
        "1e3",
        "Input should be a valid integer, unable to parse string as an integer",
    ),
    ("G2S_UPLOAD_POLL_DELAY_SECONDS", "30.5", "Input should be less than or equal to 30"),
    ("G2S_UPLOAD_POLL_DELAY_SECONDS", "-1", "Input should be greater than or equal to 0"),
    ("G2S_MIRROR_SWEEP_DAYS", "366", "Input should be less than or equal to 365"),
    ("G2S_MIRROR_SWEEP_DAYS", "-1", "Input should be greater than or equal to 0"),
    ("G2S_STORE", "SQLite", "Input should be 'sqlite' or 'dynamodb'"),
    ("G2S_LOG_LEVEL", "debug", "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("G2S_LOG_FORMAT", " json", "Input should be 'json' or 'text'"),
    ("G2S_USER_ID", "x" * 65, r"String should match pattern '^[\w.@-]{1,64}$'"),
    ("G2S_USER_ID", "a/b", r"String should match pattern '^[\w.@-]{1,64}$'"),
    (
        "G2S_WEBHOOK_SECRET",
        WEBHOOK_SECRET[:19],
        "use at least 20 characters of A-Z, a-z, 0-9, - and _",
    ),
    (
        "G2S_WEBHOOK_SECRET",
        WEBHOOK_SECRET + "/",
        "use at least 20 characters of A-Z, a-z, 0-9, - and _",
    ),
    ("G2S_ACTIVITY_TYPES", ",", "give a comma-separated list of Garmin typeKeys, or *"),
    (
        "G2S_GEAR_MAP",
        "Pegasus 41",
        "entry 'Pegasus 41' is not 'Garmin name or uuid=Strava gear id'",
    ),
    (
        "G2S_GEAR_MAP",
        "Pegasus 41=123",
        "entry 'Pegasus 41=123': '123' is not a Strava gear id (like g123 or b456)",
    ),
    ("G2S_GEAR_MAP", "A=g1;a=g2", "entry 'a=g2': 'a' is mapped twice"),
    (
        "G2S_HIDE_FROM_HOME",
        "indoor,under:5 miles",
        (
            "rule 'under:5 miles' is none of: indoor, type:<garmin type key>, "
            "under:<n>km or under:<n>min"
        ),
    ),
    (
        "G2S_HIDE_FROM_HOME",
        "under:0km",
        "rule 'under:0km': the limit must be above 0 and at most 100000",
    ),
    (
        "G2S_CARRY_GARMIN_EDITS",
        "perhaps",
        "Input should be a valid boolean, unable to interpret input",
    ),
    (
        "G2S_MIRROR_STREAMS",
        "bogus",
        (
            "unknown stream type(s) bogus; choose from time, heartrate, latlng, altitude, "
            "cadence, watts, velocity_smooth, distance"
        ),
    ),
    (
        "G2S_STRAVA_BASE_URL",
        "http://example.com",
        "http:// is allowed only for loopback hosts; use https://",
    ),
    (
        "G2S_STRAVA_API_URL",
        "http://api-v3.strava.com",
        "http:// is allowed only for loopback hosts; use https://",
    ),
    (
        "G2S_STRAVA_OAUTH_URL",
        "http://www.strava.com",
        "http:// is allowed only for loopback hosts; use https://",
    ),
    ("G2S_STRAVA_API_URL", "api-v3.strava.com", "must be an http(s) URL"),
    ("G2S_GARMIN_BASE_URL", "ftp://x", "must be an http(s) URL"),
    ("G2S_GARMIN_BASE_URL", "www.strava.com", "must be an http(s) URL"),
    (
        "G2S_HTTP_HOST",
        "127.0.0.1:8080",
        "must be an IP address or a host name (0.0.0.0 for every interface)",
    ),
]


@pytest.mark.parametrize(("variable", "text", "says"), WRONG)
def test_a_wrong_value_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, says: str
) -> None:
    """Out of bounds, not a number, a choice misspelt, a pattern or a check refusing:
    exactly `setting VARIABLE: what is wrong`, whatever case the variable is set in."""
    monkeypatch.setenv(variable.lower(), text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"setting {variable}: {says}"


def test_strava_urls_come_from_the_base_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset: Strava's old layout on G2S_STRAVA_BASE_URL (default www.strava.com); each
    of G2S_STRAVA_API_URL and G2S_STRAVA_OAUTH_URL wins on its own when set."""
    assert load_settings().strava_urls == StravaUrls(
        api="https://www.strava.com/api/v3", oauth="https://www.strava.com"
    )
    monkeypatch.setenv("G2S_STRAVA_BASE_URL", "http://127.0.0.1:8123/")
    assert load_settings().strava_urls == StravaUrls(
        api="http://127.0.0.1:8123/api/v3", oauth="http://127.0.0.1:8123"
    )
    monkeypatch.setenv("G2S_STRAVA_API_URL", "https://api-v3.strava.com/")
    assert load_settings().strava_urls == StravaUrls(
        api="https://api-v3.strava.com", oauth="http://127.0.0.1:8123"
    )
    monkeypatch.setenv("G2S_STRAVA_OAUTH_URL", "https://www.strava.com")
    monkeypatch.delenv("G2S_STRAVA_API_URL")
    assert load_settings().strava_urls == StravaUrls(
        api="http://127.0.0.1:8123/api/v3", oauth="https://www.strava.com"
    )


def test_a_db_path_that_is_a_symbolic_link_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The store would chmod and rewrite the file the link points at."""
    link = tmp_path / "link.sqlite3"
    link.symlink_to(tmp_path / "g2s.sqlite3")
    monkeypatch.setenv("G2S_DB_PATH", str(link))
    with pytest.raises(ConfigError, match=r"^setting G2S_DB_PATH: is a symbolic link; "):
        load_settings()


def test_a_dotenv_file_is_read_under_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """./.env: names in any case, quotes, `export`, comments, ${VARIABLE}; a variable set
    in the environment wins over the same one in the file (even a wrong one there);
    env_file=None reads no file."""
    (tmp_path / ".env").write_text(
        "# comment\nG2S_LOOKBACK=0\ng2s_max_attempts='3'\nexport G2S_LOG_LEVEL=DEBUG\n"
        "G2S_DB_PATH=${BASE}/g2s.db\nOTHER=1\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("G2S_LOOKBACK", "7")
    monkeypatch.setenv("BASE", "/srv")
    settings = load_settings()
    assert (settings.lookback, settings.max_attempts) == (7, 3)
    assert settings.log_level == "DEBUG"
    assert settings.db_path == Path("/srv/g2s.db")
    assert load_settings(env_file=None).max_attempts == 5


def test_a_wrong_value_in_dotenv_is_one_line_naming_its_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("g2s_lookback=0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "setting G2S_LOOKBACK: Input should be greater than or equal to 1"


def test_a_secret_is_masked_and_compared_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither repr nor str of the settings shows a secret; equal texts are equal."""
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "hunter2-the-secret")
    monkeypatch.setenv("GARMIN_PASSWORD", "hunter3-the-password")
    settings = load_settings()
    assert settings.strava_client_secret is not None
    assert settings.strava_client_secret.get_secret_value() == "hunter2-the-secret"
    for shown in (repr(settings), str(settings)):
        assert "hunter2" not in shown
        assert "hunter3" not in shown
    assert str(settings.strava_client_secret) == "**********"
    assert settings.strava_client_secret == SecretStr("hunter2-the-secret")
    assert settings.strava_client_secret != SecretStr("other")
    assert settings.strava_client_secret != "hunter2-the-secret"


def test_settings_are_frozen() -> None:
    """Read once, shared by every part of the app: nothing changes them underneath."""
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.lookback = 3
    assert settings == load_settings()


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


def test_the_garmin_proxy_is_an_http_or_socks_url_and_a_secret() -> None:
    """G2S_GARMIN_PROXY: http(s) or socks (4, 4a, 5, 5h) with a host, nothing after
    the port; masked like every secret, and a wrong one is one line that does not
    repeat it (it may hold the proxy's password)."""
    for right in ("http://me:hunter2@home.example:3128", "socks5h://me:hunter2@10.0.0.2:1080"):
        settings = load_settings(garmin_proxy=right)
        assert settings.garmin_proxy_url == right
        assert "hunter2" not in repr(settings)
    assert load_settings().garmin_proxy_url is None
    wrong = {
        "home.example:3128": "must be an http(s) or socks proxy URL",
        "ftp://me:hunter2@home.example:21": "must be an http(s) or socks proxy URL",
        "http://me:hunter2@home.example:31x8": "the proxy URL's port is not a number",
        "http://me:hunter2@home.example:3128/path": "a proxy URL has no path",
    }
    for text, says in wrong.items():
        with pytest.raises(ConfigError) as caught:
            load_settings(garmin_proxy=text)
        line = str(caught.value)
        assert line.startswith(f"setting G2S_GARMIN_PROXY: {says}")
        assert "\n" not in line
        assert "hunter2" not in line
