"""Whether Strava serves the application at all, kept application-wide in the store.

Since June 2026 a Standard-tier application works only while its owner has a Strava
subscription; without one Strava answers every API call with 403 "Application Status
Inactive". That is the application's state, not an athlete's: every account waits,
none needs re-authorizing. While it holds, one probe request per 15-minute rate
window (the windows of domain.budget) asks whether it is over.

`StravaAppAccess` is a frozen value like `RateBudget`: every change returns a new one
for the caller to persist. Pure: the current time is always passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from garmin2strava.domain.budget import next_window_reset

__all__ = ["APP_ACCESS_KEY", "APP_CAPPED_KEY", "StravaAppAccess"]

# Its key among the store's application-wide state (beside "strava_budget").
APP_ACCESS_KEY = "strava_app_access"
# `{"since": ISO time}` while the last token exchange met 403 "Limit of connected
# athletes exceeded" (errors.StravaAppCapped): `status` shows it without a request;
# the next exchange that connects an athlete removes it.
APP_CAPPED_KEY = "strava_app_capped"


@dataclass(frozen=True, slots=True)
class StravaAppAccess:
    """`inactive_since` is None while Strava serves the application."""

    inactive_since: datetime | None = None
    reason: str = ""
    # The last request made while inactive (the 403 that found it, or a probe).
    last_probe_at: datetime | None = None
    probes: int = 0
    # When the last inactive spell ended (kept for `status`).
    recovered_at: datetime | None = None

    @property
    def inactive(self) -> bool:
        return self.inactive_since is not None

    def next_probe_at(self, now: datetime) -> datetime | None:
        """When the next probe may go (the next window); None while active."""
        return next_window_reset(now) if self.inactive else None

    def deactivated(self, now: datetime, reason: str) -> StravaAppAccess:
        """Strava answered "inactive": the spell starts now (or goes on)."""
        since = self.inactive_since or now
        probes = self.probes + 1 if self.inactive else 1
        return replace(self, inactive_since=since, reason=reason, last_probe_at=now, probes=probes)

    def recovered(self, now: datetime) -> StravaAppAccess:
        return StravaAppAccess(recovered_at=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inactiveSince": _format(self.inactive_since),
            "reason": self.reason,
            "lastProbeAt": _format(self.last_probe_at),
            "probes": self.probes,
            "recoveredAt": _format(self.recovered_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StravaAppAccess:
        """Broken fields take defaults: Strava's next answer corrects them."""
        if not data:
            return cls()
        probes = data.get("probes")
        reason = data.get("reason")
        return cls(
            inactive_since=_parse(data.get("inactiveSince")),
            reason=reason if isinstance(reason, str) else "",
            last_probe_at=_parse(data.get("lastProbeAt")),
            probes=probes if isinstance(probes, int) and not isinstance(probes, bool) else 0,
            recovered_at=_parse(data.get("recoveredAt")),
        )


def _format(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
