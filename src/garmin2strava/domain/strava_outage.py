"""Since when Strava has been failing, kept application-wide in the store.

A Strava request that gets no answer, a 5xx or a 408 starts (or continues) an outage;
the next answer below 500 ends it. Only requests mark it, and a sync cycle makes a
Strava request only when work waits, so an outage that lasts means work waited all
along (the `strava.unreachable` condition, services/conditions.py). Pure: the current
time is always passed in; the adapter persists what these return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = ["STRAVA_OUTAGE_KEY", "StravaOutage"]

# Its key among the store's application-wide state (beside "strava_budget").
STRAVA_OUTAGE_KEY = "strava_outage"
# Failures further apart than this are two spells: nothing asked Strava for half a day
# (a failed upload is retried at most 6 h apart, so one outage keeps failing more often).
SPELL_GAP = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class StravaOutage:
    """`since` is None while Strava answers."""

    since: datetime | None = None
    last_failure_at: datetime | None = None
    failures: int = 0
    reason: str = ""  # the last failure, e.g. "Strava answered 503"

    @property
    def failing(self) -> bool:
        return self.since is not None

    def lasted(self) -> float:
        """Seconds from the first to the last failure of this spell (0 when none)."""
        if self.since is None or self.last_failure_at is None:
            return 0.0
        return (self.last_failure_at - self.since).total_seconds()

    def failed(self, now: datetime, reason: str) -> StravaOutage:
        """One more failure. After SPELL_GAP with no failure (and no answer either:
        nothing was asked), a failure starts a new spell, not one of days."""
        last = self.last_failure_at
        if self.since is not None and last is not None and now - last > SPELL_GAP:
            return StravaOutage(since=now, last_failure_at=now, failures=1, reason=reason)
        return replace(
            self,
            since=self.since or now,
            last_failure_at=now,
            failures=self.failures + 1,
            reason=reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "lastFailureAt": self.last_failure_at.isoformat() if self.last_failure_at else None,
            "failures": self.failures,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StravaOutage:
        """A broken record reads as no outage: the next failure starts a fresh one."""
        if not data:
            return cls()
        try:
            since = datetime.fromisoformat(str(data["since"])) if data.get("since") else None
            last = data.get("lastFailureAt")
            last_at = datetime.fromisoformat(str(last)) if last else since
        except ValueError:
            return cls()
        failures = data.get("failures")
        return cls(
            since=since,
            last_failure_at=last_at,
            failures=failures if isinstance(failures, int) else 0,
            reason=str(data.get("reason") or ""),
        )
