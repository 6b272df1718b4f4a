"""The exception hierarchy at our boundaries. Adapters translate library errors into
these; entrypoints translate these into exit codes, HTTP answers and log lines.
Messages never contain a token, a password or an authorization code."""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "APP_CAPPED_CAUSE",
    "APP_INACTIVE_CAUSE",
    "ArchiveRejected",
    "ConfigError",
    "FileRejected",
    "G2SError",
    "GarminAuthError",
    "GarminNetworkRefused",
    "GarminNotFound",
    "GarminRateLimited",
    "GarminRefused",
    "InvalidActivity",
    "RateLimited",
    "StoreConflict",
    "StravaAppCapped",
    "StravaAppInactive",
    "StravaAuthError",
    "StravaNotFound",
    "TransientError",
]


class G2SError(Exception):
    """Base of every error garmin2strava raises on purpose."""


class ConfigError(G2SError):
    """A setting is missing or wrong. The message names it."""


class TransientError(G2SError):
    """A network error or a 5xx: worth another attempt later."""


class RateLimited(G2SError):
    """Strava's budget is spent (or it answered 429): defer work until `until`."""

    def __init__(self, until: datetime, reason: str = "Strava rate budget spent") -> None:
        self.until = until
        msg = f"{reason}; deferring until {until.isoformat()}"
        super().__init__(msg)


APP_INACTIVE_CAUSE = (
    "the Strava application is inactive (403 Application Status Inactive): its owner's "
    "Strava subscription has lapsed; the owner must subscribe and reactivate the "
    "application at https://www.strava.com/settings/api"
)


class StravaAppInactive(RateLimited):
    """Strava refuses every call of the application (403 "Application Status
    Inactive"): a Standard-tier application works only while its owner has a Strava
    subscription. Application-wide and no athlete's doing, so no account needs
    re-authorizing; work waits until `until`, the next probe window. A RateLimited,
    so that every caller defers its work and counts no attempt."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until, APP_INACTIVE_CAUSE)


APP_CAPPED_CAUSE = (
    "the Strava application has reached its capacity of connected athletes (403 Limit "
    "of connected athletes exceeded): raise the capacity on the application's settings "
    "page, https://www.strava.com/settings/api, or use another application"
)


class StravaAppCapped(G2SError):
    """The token exchange answered 403 "Limit of connected athletes exceeded": a new
    application serves 1 athlete until its owner raises the capacity (Strava's API FAQ,
    2026-03-16). Nothing the athlete can do; another consent would fail the same way."""

    def __init__(self) -> None:
        super().__init__(APP_CAPPED_CAUSE)


class StravaAuthError(G2SError):
    """Strava refused our token and a refresh did not help (revoked, bad secret)."""


class StravaNotFound(G2SError):
    """Strava answered 404."""


class GarminRateLimited(G2SError):
    """Garmin answered 429: back off for hours."""


class GarminAuthError(G2SError):
    """Garmin refused the stored tokens: a human must run `garmin2strava garmin login`."""


class GarminNetworkRefused(G2SError):
    """Garmin answered 403: it refuses this network or client (a cloud address, a
    Cloudflare block), not the tokens. Logging in again cannot help; another network
    or G2S_GARMIN_PROXY can."""


class GarminNotFound(G2SError):
    """Garmin answered 404 (for an ORIGINAL download: a manual activity, no file)."""


class GarminRefused(G2SError):
    """Garmin answered a 4xx that another attempt will not change (400, 410, 422, ...)."""

    def __init__(self, status: int) -> None:
        self.status = status
        msg = f"Garmin answered {status}"
        super().__init__(msg)


class InvalidActivity(G2SError):
    """An activity record (a Garmin list record, a Strava activity's JSON) lacks a field
    we need or has a wrong type; the message names it."""


class FileRejected(G2SError):
    """The downloaded activity file is not something we may upload."""


class ArchiveRejected(FileRejected):
    """The ORIGINAL zip is unsafe or unusable (traversal, links, bomb, no activity file)."""


class StoreConflict(G2SError):
    """A conditional write lost against a newer write."""
