"""Settings from the environment and an optional `.env` (README.md "Settings").

One pydantic-settings model, frozen. Credentials use the names the ecosystem already
uses; the daemon's own knobs use the `G2S_` prefix. Each field names its environment
variable (`validation_alias`, in any case) and carries its bounds and checks; a
variable set in the environment wins over the same one in `.env`. `load_settings()`
turns a wrong value into a ConfigError of one line naming the variable, which the
commands print and exit 2 on. Credentials are SecretStr: masked in repr, str and a
log line, read with `.get_secret_value()`.
"""

import ipaddress
import os
import re
from pathlib import Path
from string import ascii_letters, digits
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from garmin2strava.domain.feed_rules import parse_hide_rules
from garmin2strava.domain.gear import parse_gear_map
from garmin2strava.domain.strava_urls import REAL_STRAVA_BASE_URL, StravaUrls
from garmin2strava.domain.streams import parse_stream_types
from garmin2strava.domain.webhook import MIN_SECRET_LENGTH, derive_path_secret
from garmin2strava.errors import ConfigError

__all__ = [
    "REAL_GARMIN_BASE_URL",
    "REAL_GARMIN_DI_TOKEN_URL",
    "REAL_STRAVA_BASE_URL",
    "RUNNING_TYPES",
    "Settings",
    "env_name",
    "load_settings",
    "proxy_url_problem",
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

REAL_GARMIN_BASE_URL = "https://connectapi.garmin.com"
# A URL, not a secret: S105 only sees "TOKEN" in the name.
REAL_GARMIN_DI_TOKEN_URL = "https://diauth.garmin.com/di-oauth2-service/oauth/token"  # noqa: S105


# Strava's ids are positive 64-bit integers.
_MAX_ID = 2**63 - 1
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


# -- the checks a value goes through (a ValueError's text ends the error line) -----------
def _split_types(value: Any) -> Any:
    if isinstance(value, str):
        parts = tuple(p.strip().lower() for p in value.split(",") if p.strip())
        if not parts:
            raise ValueError("give a comma-separated list of Garmin typeKeys, or *")
        return parts
    return value


def _stream_types(value: Any) -> Any:
    return parse_stream_types(value) if isinstance(value, str | list | tuple) else value


def _gear_map(value: str) -> str:
    parse_gear_map(value)  # a malformed map is one line naming the entry
    return value.strip()


def _hide_rules(value: str) -> str:
    parse_hide_rules(value)
    return value.strip()


def _url_safe_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    allowed = set(ascii_letters + digits + "-_")
    if len(text) < MIN_SECRET_LENGTH or not set(text) <= allowed:
        msg = f"use at least {MIN_SECRET_LENGTH} characters of A-Z, a-z, 0-9, - and _"
        raise ValueError(msg)
    return value


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


def _apprise_urls(value: SecretStr) -> SecretStr:
    # The messages never quote a URL: each one is a secret (a token, a password).
    urls = split_notify_urls(value.get_secret_value())
    if not urls:
        raise ValueError("give one or more Apprise URLs (scheme://...), or unset it")
    for position, url in enumerate(urls, 1):
        if not _SCHEME_URL.fullmatch(url):
            msg = (
                f"URL {position} of {len(urls)} has no scheme:// "
                "(an Apprise URL such as ntfy://, mailto:// or json://)"
            )
            raise ValueError(msg)
    return value


def _http_url_secret(value: SecretStr) -> SecretStr:
    parts = urlsplit(value.get_secret_value().strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http(s) URL (e.g. https://hc-ping.com/<uuid>)")
    return SecretStr(value.get_secret_value().strip())


# G2S_GARMIN_PROXY: what requests (with PySocks) and curl_cffi both take.
_PROXY_SCHEMES = frozenset({"http", "https", "socks4", "socks4a", "socks5", "socks5h"})


def proxy_url_problem(text: str) -> str:
    """What is wrong with an http(s) or socks proxy URL ("" when nothing); never
    repeats the URL (it may hold a password). The Lambda checks its SSM value with it."""
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in _PROXY_SCHEMES or not parts.hostname:
        return (
            "must be an http(s) or socks proxy URL (http://host:3128, "
            "socks5h://user:password@host:1080)"
        )
    try:
        parts.port  # noqa: B018  urlsplit checks the port only when asked
    except ValueError:
        return "the proxy URL's port is not a number from 0 to 65535"
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        return "a proxy URL has no path, query or fragment (scheme://host:port)"
    return ""


def _proxy_url(value: SecretStr) -> SecretStr:
    problem = proxy_url_problem(value.get_secret_value())
    if problem:
        raise ValueError(problem)
    return SecretStr(value.get_secret_value().strip())


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "garmin2strava"


def _default_db_path() -> Path:
    return _default_data_dir() / "garmin2strava.sqlite3"


# A comma list, split by the validator: NoDecode keeps pydantic-settings from reading
# the text as JSON first.
_TypeKeys = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_types)]
_StreamNames = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_stream_types)]
_Url = Annotated[str, AfterValidator(_https_unless_loopback)]
_Host = Annotated[str, AfterValidator(_a_host)]
_UrlSafeSecret = Annotated[SecretStr, AfterValidator(_url_safe_secret)]
_DbPath = Annotated[Path, AfterValidator(_not_a_link)]
_NotifyUrls = Annotated[SecretStr, AfterValidator(_apprise_urls)]
_HeartbeatUrl = Annotated[SecretStr, AfterValidator(_http_url_secret)]
_ProxyUrl = Annotated[SecretStr, AfterValidator(_proxy_url)]
_GearMap = Annotated[str, AfterValidator(_gear_map)]
_HideRules = Annotated[str, AfterValidator(_hide_rules)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # load_settings(**overrides) names the fields (tests, the sandbox).
        populate_by_name=True,
        frozen=True,
    )

    # -- credentials -----------------------------------------------------------------
    strava_client_id: int | None = Field(
        None, validation_alias="STRAVA_CLIENT_ID", ge=1, le=_MAX_ID
    )
    strava_client_secret: SecretStr | None = Field(None, validation_alias="STRAVA_CLIENT_SECRET")
    strava_refresh_token: SecretStr | None = Field(None, validation_alias="STRAVA_REFRESH_TOKEN")
    strava_verify_token: SecretStr | None = Field(None, validation_alias="STRAVA_VERIFY_TOKEN")
    strava_subscription_id: int | None = Field(
        None, validation_alias="STRAVA_SUBSCRIPTION_ID", ge=1, le=_MAX_ID
    )
    # The webhook callback path's secret; unset: derived from STRAVA_VERIFY_TOKEN.
    webhook_secret: _UrlSafeSecret | None = Field(None, validation_alias="G2S_WEBHOOK_SECRET")
    garmin_tokens: SecretStr | None = Field(None, validation_alias="GARMIN_TOKENS")
    garmin_email: str | None = Field(None, validation_alias="GARMIN_EMAIL")
    garmin_password: SecretStr | None = Field(None, validation_alias="GARMIN_PASSWORD")

    # -- store -----------------------------------------------------------------------
    user_id: str = Field("default", validation_alias="G2S_USER_ID", pattern=r"^[\w.@-]{1,64}$")
    store: Literal["sqlite", "dynamodb"] = Field("sqlite", validation_alias="G2S_STORE")
    db_path: _DbPath = Field(default_factory=_default_db_path, validation_alias="G2S_DB_PATH")
    dynamodb_table: str = Field("garmin2strava", validation_alias="G2S_DYNAMODB_TABLE")
    token_key: SecretStr | None = Field(None, validation_alias="G2S_TOKEN_KEY")
    kms_key_id: str | None = Field(None, validation_alias="G2S_KMS_KEY_ID")

    # -- sync ------------------------------------------------------------------------
    sync_interval_seconds: int = Field(
        60, validation_alias="G2S_SYNC_INTERVAL_SECONDS", ge=10, le=86_400
    )
    activity_types: _TypeKeys = Field(RUNNING_TYPES, validation_alias="G2S_ACTIVITY_TYPES")
    lookback: int = Field(20, validation_alias="G2S_LOOKBACK", ge=1, le=1000)
    max_attempts: int = Field(5, validation_alias="G2S_MAX_ATTEMPTS", ge=1, le=50)
    match_tolerance_seconds: int = Field(
        120, validation_alias="G2S_MATCH_TOLERANCE_SECONDS", ge=0, le=3600
    )
    garmin_backoff_seconds: int = Field(
        6 * 3600, validation_alias="G2S_GARMIN_BACKOFF_SECONDS", ge=60, le=7 * 86_400
    )
    upload_poll_delay_seconds: float = Field(
        2.0, validation_alias="G2S_UPLOAD_POLL_DELAY_SECONDS", ge=0, le=30
    )
    upload_description: str | None = Field(None, validation_alias="G2S_UPLOAD_DESCRIPTION")
    # Finishing an upload on Strava (one PUT): `Garmin name or uuid=Strava gear id;...`
    # over the match by name, the rules that keep a run out of followers' feeds, and
    # whether a Garmin rename after the upload is carried to Strava.
    gear_map: _GearMap = Field("", validation_alias="G2S_GEAR_MAP")
    hide_from_home: _HideRules = Field("", validation_alias="G2S_HIDE_FROM_HOME")
    carry_garmin_edits: bool = Field(default=True, validation_alias="G2S_CARRY_GARMIN_EDITS")
    audit_retention_days: int = Field(7, validation_alias="G2S_AUDIT_RETENTION_DAYS", ge=1, le=365)
    dead_letter_retention_days: int = Field(
        30, validation_alias="G2S_DEAD_LETTER_RETENTION_DAYS", ge=1, le=3650
    )

    # Athletes one Strava application may serve: 10 in the Standard tier (2026);
    # raise it for an Extended-tier application. `status` warns above it.
    strava_athlete_capacity: int = Field(
        10, validation_alias="G2S_STRAVA_ATHLETE_CAPACITY", ge=1, le=1_000_000
    )

    # -- mirror ----------------------------------------------------------------------
    mirror_streams: _StreamNames = Field((), validation_alias="G2S_MIRROR_STREAMS")
    mirror_reconcile_hours: float = Field(
        24.0, validation_alias="G2S_MIRROR_RECONCILE_HOURS", ge=0, le=24 * 30
    )
    # Every this many days the due pass lists the whole history (services/reconcile.py):
    # a dropped delete or rename of an activity older than the window is repaired.
    mirror_sweep_days: float = Field(7.0, validation_alias="G2S_MIRROR_SWEEP_DAYS", ge=0, le=365)

    # -- endpoints -------------------------------------------------------------------
    strava_base_url: _Url = Field(REAL_STRAVA_BASE_URL, validation_alias="G2S_STRAVA_BASE_URL")
    # Strava's new API host (2027) has no /api/v3 prefix and OAuth stays on www: each
    # wins over G2S_STRAVA_BASE_URL when set (see `strava_urls`).
    strava_api_url: _Url | None = Field(None, validation_alias="G2S_STRAVA_API_URL")
    strava_oauth_url: _Url | None = Field(None, validation_alias="G2S_STRAVA_OAUTH_URL")
    garmin_base_url: _Url = Field(REAL_GARMIN_BASE_URL, validation_alias="G2S_GARMIN_BASE_URL")
    # Every Garmin request (API, download, token refresh, login) goes through this proxy:
    # a secret, as it may carry a password (README "Garmin through a proxy").
    garmin_proxy: _ProxyUrl | None = Field(None, validation_alias="G2S_GARMIN_PROXY")
    http_host: _Host = Field("127.0.0.1", validation_alias="G2S_HTTP_HOST")
    http_port: int = Field(8080, validation_alias="G2S_HTTP_PORT", ge=1, le=65535)
    # The operators' listener (the status page, /metrics, the detailed /healthz):
    # loopback by default.
    admin_host: _Host = Field("127.0.0.1", validation_alias="G2S_ADMIN_HOST")
    admin_port: int = Field(8081, validation_alias="G2S_ADMIN_PORT", ge=1, le=65535)
    # Required when the admin listener (the status page and its actions) is not loopback.
    admin_token: SecretStr | None = Field(None, validation_alias="G2S_ADMIN_TOKEN")

    # -- being told (README "Being told") -----------------------------------------------
    # Apprise URLs, separated by commas or whitespace: a secret (tokens, passwords).
    notify_urls: _NotifyUrls | None = Field(None, validation_alias="G2S_NOTIFY_URLS")
    # Pinged after each sync cycle, healthchecks.io style: a secret (its path is the key).
    heartbeat_url: _HeartbeatUrl | None = Field(None, validation_alias="G2S_HEARTBEAT_URL")

    # -- logging ---------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="G2S_LOG_LEVEL"
    )
    log_format: Literal["json", "text"] = Field("json", validation_alias="G2S_LOG_FORMAT")

    @property
    def notify_url_list(self) -> tuple[str, ...]:
        """The Apprise URLs of G2S_NOTIFY_URLS (empty when unset)."""
        if self.notify_urls is None:
            return ()
        return split_notify_urls(self.notify_urls.get_secret_value())

    @property
    def webhook_path_secret(self) -> str | None:
        """G2S_WEBHOOK_SECRET, else the secret derived from STRAVA_VERIFY_TOKEN."""
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value()
        if self.strava_verify_token is None:
            return None
        return derive_path_secret(self.strava_verify_token.get_secret_value())

    @property
    def strava_urls(self) -> StravaUrls:
        """Where every Strava request goes: G2S_STRAVA_API_URL and G2S_STRAVA_OAUTH_URL,
        each unset one from G2S_STRAVA_BASE_URL (`{base}/api/v3`, `{base}`)."""
        from_base = StravaUrls.one_origin(self.strava_base_url)
        return StravaUrls(
            api=self.strava_api_url or from_base.api, oauth=self.strava_oauth_url or from_base.oauth
        )

    @property
    def garmin_proxy_url(self) -> str | None:
        """G2S_GARMIN_PROXY in clear (for the Garmin client only), None when unset."""
        return None if self.garmin_proxy is None else self.garmin_proxy.get_secret_value()

    @property
    def garmin_di_token_url(self) -> str:
        if self.garmin_base_url == REAL_GARMIN_BASE_URL:
            return REAL_GARMIN_DI_TOKEN_URL
        return f"{self.garmin_base_url}/di-oauth2-service/oauth/token"

    def wants_type(self, type_key: str) -> bool:
        return "*" in self.activity_types or type_key in self.activity_types


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    alias = Settings.model_fields[field_name].validation_alias
    return alias if isinstance(alias, str) else field_name.upper()


def load_settings(*, env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """The environment, `env_file` (None: none) and `overrides` (by field name, above
    both), validated; on error a ConfigError of one line naming the setting."""
    # `_env_file` is BaseSettings.__init__'s; mypy sees only the fields' signature.
    arguments: dict[str, Any] = {"_env_file": env_file, **overrides}
    try:
        return Settings(**arguments)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        text = str(first["msg"]).removeprefix("Value error, ")
        msg = f"setting {env_name(name) if name in Settings.model_fields else name}: {text}"
        raise ConfigError(msg) from None
