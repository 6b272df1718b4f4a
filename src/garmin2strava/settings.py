"""Settings from the environment and an optional `.env` (README.md "Settings").

Credentials use the names the ecosystem already uses; the daemon's own knobs use the
`G2S_` prefix. `Settings` is declared once, here, as a plain frozen dataclass: each
field's environment name, bounds and checks ride in its `Annotated` metadata, and
nothing here imports pydantic. Two readers use that declaration:

- `load_settings()` validates with pydantic-settings (settings_model.py, imported when
  called): the authority on every value and every error line, which names the setting.
- `settings_fast.read_fast()` converts the plain values (decimal numbers, the choices,
  text) with the standard library and gives up (None) on anything else.

`read_settings()` tries the fast reader and falls back to pydantic: the local commands
start without importing pydantic, and every error still comes from pydantic.
"""

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from string import ascii_letters, digits
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from garmin2strava.domain.streams import parse_stream_types
from garmin2strava.domain.webhook import MIN_SECRET_LENGTH, derive_path_secret

__all__ = [
    "RUNNING_TYPES",
    "Check",
    "Env",
    "Ge",
    "Le",
    "Pattern",
    "Secret",
    "Settings",
    "Split",
    "env_name",
    "load_settings",
    "read_settings",
    "split_notify_urls",
]

# Garmin typeKeys of the running family (suffixes such as `_v2` are stripped first).
RUNNING_TYPES: tuple[str, ...] = (
    "running",
    "trail_running",
    "treadmill_running",
    "track_running",
    "indoor_running",
    "street_running",
    "virtual_run",
    "ultra_run",
    "obstacle_run",
)

REAL_STRAVA_BASE_URL = "https://www.strava.com"
REAL_GARMIN_BASE_URL = "https://connectapi.garmin.com"
# A URL, not a secret: S105 only sees "TOKEN" in the name.
REAL_GARMIN_DI_TOKEN_URL = "https://diauth.garmin.com/di-oauth2-service/oauth/token"  # noqa: S105


# Strava's ids are positive 64-bit integers.
_MAX_ID = 2**63 - 1
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_MASK = "**********"


class Secret:
    """A credential: compared by value, shown masked (repr, str, a log line)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK


# -- what a field's metadata can say (read by both readers) ------------------------------
@dataclass(frozen=True, slots=True)
class Env:
    """The environment variable that sets the field (no prefix games)."""

    name: str


@dataclass(frozen=True, slots=True)
class Ge:
    """The value is at least `ge`. (annotated_types has the same marker; its import
    costs a local command's start a tenth of its time.)"""

    ge: int | float


@dataclass(frozen=True, slots=True)
class Le:
    """The value is at most `le`."""

    le: int | float


@dataclass(frozen=True, slots=True)
class Pattern:
    """The whole text must match this regular expression."""

    regex: str


@dataclass(frozen=True, slots=True)
class Split:
    """Turns the text into the field's tuple before it is checked (no JSON decoding);
    leaves what is not text alone."""

    parse: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Check:
    """Runs on the converted value (a secret's text), when there is one; returns the
    value to keep or raises ValueError with the message of the error line."""

    check: Callable[[Any], Any]


def _split_types(value: Any) -> Any:
    if isinstance(value, str):
        parts = tuple(p.strip().lower() for p in value.split(",") if p.strip())
        if not parts:
            raise ValueError("give a comma-separated list of Garmin typeKeys, or *")
        return parts
    return value


def _stream_types(value: Any) -> Any:
    return parse_stream_types(value) if isinstance(value, str | list | tuple) else value


def _url_safe_secret(text: str) -> str:
    allowed = set(ascii_letters + digits + "-_")
    if len(text) < MIN_SECRET_LENGTH or not set(text) <= allowed:
        msg = f"use at least {MIN_SECRET_LENGTH} characters of A-Z, a-z, 0-9, - and _"
        raise ValueError(msg)
    return text


def _https_unless_loopback(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("http:// is allowed only for loopback hosts; use https://")
    return value.rstrip("/")


def _a_host(value: str) -> str:
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host) or len(host) > 253:  # noqa: PLR2004 (RFC 1035)
        msg = "must be an IP address or a host name (0.0.0.0 for every interface)"
        raise ValueError(msg)
    return host.lower()


def _not_a_link(value: Path) -> Path:
    # The store chmods and rewrites this file: through a link it would be another.
    if value.is_symlink():
        msg = "is a symbolic link; give the path of the database file itself"
        raise ValueError(msg)
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Apprise's own rule (apprise.utils.parse.URL_DETECTION_RE): a comma or a space ends a
# URL only before the next `scheme://`, so a comma inside one (mailto's `to=a@x,b@y`)
# stays in it.
_URL_BREAK = re.compile(r"\s+|[,;]+(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def split_notify_urls(text: str) -> tuple[str, ...]:
    """G2S_NOTIFY_URLS as its URLs: separated by commas or whitespace."""
    parts = (part.strip(",;") for part in _URL_BREAK.split(text))
    return tuple(part for part in parts if part)


def _apprise_urls(text: str) -> str:
    # The messages never quote a URL: each one is a secret (a token, a password).
    urls = split_notify_urls(text)
    if not urls:
        raise ValueError("give one or more Apprise URLs (scheme://...), or unset it")
    for position, url in enumerate(urls, 1):
        if not _SCHEME_URL.fullmatch(url):
            msg = (
                f"URL {position} of {len(urls)} has no scheme:// "
                "(an Apprise URL such as ntfy://, mailto:// or json://)"
            )
            raise ValueError(msg)
    return text


def _http_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http(s) URL (e.g. https://hc-ping.com/<uuid>)")
    return text.strip()


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "garmin2strava"


def _default_db_path() -> Path:
    return _default_data_dir() / "garmin2strava.sqlite3"


_URL = Check(_https_unless_loopback)
_HOST = Check(_a_host)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    # -- credentials -----------------------------------------------------------------
    strava_client_id: Annotated[int | None, Env("STRAVA_CLIENT_ID"), Ge(1), Le(_MAX_ID)] = None
    strava_client_secret: Annotated[Secret | None, Env("STRAVA_CLIENT_SECRET")] = None
    strava_refresh_token: Annotated[Secret | None, Env("STRAVA_REFRESH_TOKEN")] = None
    strava_verify_token: Annotated[Secret | None, Env("STRAVA_VERIFY_TOKEN")] = None
    strava_subscription_id: Annotated[
        int | None, Env("STRAVA_SUBSCRIPTION_ID"), Ge(1), Le(_MAX_ID)
    ] = None
    # The webhook callback path's secret; unset: derived from STRAVA_VERIFY_TOKEN.
    webhook_secret: Annotated[Secret | None, Env("G2S_WEBHOOK_SECRET"), Check(_url_safe_secret)] = (
        None
    )
    garmin_tokens: Annotated[Secret | None, Env("GARMIN_TOKENS")] = None
    garmin_email: Annotated[str | None, Env("GARMIN_EMAIL")] = None
    garmin_password: Annotated[Secret | None, Env("GARMIN_PASSWORD")] = None

    # -- store -----------------------------------------------------------------------
    user_id: Annotated[str, Env("G2S_USER_ID"), Pattern(r"^[\w.@-]{1,64}$")] = "default"
    store: Annotated[Literal["sqlite", "dynamodb"], Env("G2S_STORE")] = "sqlite"
    db_path: Annotated[Path, Env("G2S_DB_PATH"), Check(_not_a_link)] = field(
        default_factory=_default_db_path
    )
    dynamodb_table: Annotated[str, Env("G2S_DYNAMODB_TABLE")] = "garmin2strava"
    token_key: Annotated[Secret | None, Env("G2S_TOKEN_KEY")] = None
    kms_key_id: Annotated[str | None, Env("G2S_KMS_KEY_ID")] = None

    # -- sync ------------------------------------------------------------------------
    sync_interval_seconds: Annotated[int, Env("G2S_SYNC_INTERVAL_SECONDS"), Ge(10), Le(86_400)] = 60
    activity_types: Annotated[tuple[str, ...], Env("G2S_ACTIVITY_TYPES"), Split(_split_types)] = (
        RUNNING_TYPES
    )
    lookback: Annotated[int, Env("G2S_LOOKBACK"), Ge(1), Le(1000)] = 20
    max_attempts: Annotated[int, Env("G2S_MAX_ATTEMPTS"), Ge(1), Le(50)] = 5
    match_tolerance_seconds: Annotated[int, Env("G2S_MATCH_TOLERANCE_SECONDS"), Ge(0), Le(3600)] = (
        120
    )
    garmin_backoff_seconds: Annotated[
        int, Env("G2S_GARMIN_BACKOFF_SECONDS"), Ge(60), Le(7 * 86_400)
    ] = 6 * 3600
    upload_poll_delay_seconds: Annotated[
        float, Env("G2S_UPLOAD_POLL_DELAY_SECONDS"), Ge(0), Le(30)
    ] = 2.0
    upload_description: Annotated[str | None, Env("G2S_UPLOAD_DESCRIPTION")] = None
    audit_retention_days: Annotated[int, Env("G2S_AUDIT_RETENTION_DAYS"), Ge(1), Le(365)] = 7
    dead_letter_retention_days: Annotated[
        int, Env("G2S_DEAD_LETTER_RETENTION_DAYS"), Ge(1), Le(3650)
    ] = 30

    # Athletes one Strava application may serve: 10 in the Standard tier (2026);
    # raise it for an Extended-tier application. `status` warns above it.
    strava_athlete_capacity: Annotated[
        int, Env("G2S_STRAVA_ATHLETE_CAPACITY"), Ge(1), Le(1_000_000)
    ] = 10

    # -- mirror ----------------------------------------------------------------------
    mirror_streams: Annotated[tuple[str, ...], Env("G2S_MIRROR_STREAMS"), Split(_stream_types)] = ()
    mirror_reconcile_hours: Annotated[
        float, Env("G2S_MIRROR_RECONCILE_HOURS"), Ge(0), Le(24 * 30)
    ] = 24.0

    # -- endpoints -------------------------------------------------------------------
    strava_base_url: Annotated[str, Env("G2S_STRAVA_BASE_URL"), _URL] = REAL_STRAVA_BASE_URL
    garmin_base_url: Annotated[str, Env("G2S_GARMIN_BASE_URL"), _URL] = REAL_GARMIN_BASE_URL
    http_host: Annotated[str, Env("G2S_HTTP_HOST"), _HOST] = "127.0.0.1"
    http_port: Annotated[int, Env("G2S_HTTP_PORT"), Ge(1), Le(65535)] = 8080
    # The operators' listener (the status page, /metrics, the detailed /healthz):
    # loopback by default.
    admin_host: Annotated[str, Env("G2S_ADMIN_HOST"), _HOST] = "127.0.0.1"
    admin_port: Annotated[int, Env("G2S_ADMIN_PORT"), Ge(1), Le(65535)] = 8081
    # Required when the admin listener (the status page and its actions) is not loopback.
    admin_token: Annotated[Secret | None, Env("G2S_ADMIN_TOKEN")] = None

    # -- being told (README "Being told") -----------------------------------------------
    # Apprise URLs, separated by commas or whitespace: a secret (tokens, passwords).
    notify_urls: Annotated[Secret | None, Env("G2S_NOTIFY_URLS"), Check(_apprise_urls)] = None
    # Pinged after each sync cycle, healthchecks.io style: a secret (its path is the key).
    heartbeat_url: Annotated[Secret | None, Env("G2S_HEARTBEAT_URL"), Check(_http_url)] = None

    # -- logging ---------------------------------------------------------------------
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Env("G2S_LOG_LEVEL")] = (
        "INFO"
    )
    log_format: Annotated[Literal["json", "text"], Env("G2S_LOG_FORMAT")] = "json"

    @property
    def webhook_path_secret(self) -> str | None:
        """G2S_WEBHOOK_SECRET, else the secret derived from STRAVA_VERIFY_TOKEN."""
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value()
        if self.strava_verify_token is None:
            return None
        return derive_path_secret(self.strava_verify_token.get_secret_value())

    @property
    def notify_url_list(self) -> tuple[str, ...]:
        """The Apprise URLs of G2S_NOTIFY_URLS (empty when unset)."""
        if self.notify_urls is None:
            return ()
        return split_notify_urls(self.notify_urls.get_secret_value())

    @property
    def garmin_di_token_url(self) -> str:
        if self.garmin_base_url == REAL_GARMIN_BASE_URL:
            return REAL_GARMIN_DI_TOKEN_URL
        return f"{self.garmin_base_url}/di-oauth2-service/oauth/token"

    def wants_type(self, type_key: str) -> bool:
        return "*" in self.activity_types or type_key in self.activity_types


def _env_of(metadata: tuple[Any, ...], field_name: str) -> str:
    return next((m.name for m in metadata if isinstance(m, Env)), field_name.upper())


_ENV_NAMES = {
    f.name: _env_of(getattr(f.type, "__metadata__", ()), f.name) for f in fields(Settings)
}


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    return _ENV_NAMES.get(field_name, field_name.upper())


def load_settings(*, env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings with pydantic-settings: the environment, `env_file` (None: none)
    and `overrides` (by field name, above both); on error raise ConfigError with one
    line naming the setting."""
    from garmin2strava.settings_model import validate  # noqa: PLC0415 (pydantic: when asked)

    return validate(env_file=env_file, overrides=overrides)


def read_settings() -> Settings:
    """The settings of the environment and ./.env: the fast reader's when it is sure,
    else pydantic's (which also gives the error line)."""
    from garmin2strava.settings_fast import read_fast  # noqa: PLC0415 (cycle: it reads Settings)

    fast = read_fast()
    return fast if fast is not None else load_settings()
