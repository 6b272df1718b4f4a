"""Value objects shared by services and adapters. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from garmin2strava.domain.strava_finish import StravaFinish

__all__ = [
    "Account",
    "AccountStatus",
    "AuditEvent",
    "GarminActivity",
    "GarminTokens",
    "LedgerEntry",
    "PreparedFile",
    "StravaActivity",
    "StravaTokens",
    "UploadOutcome",
    "UploadStatus",
    "Workout",
]


class AccountStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_GARMIN_LOGIN = "needs_garmin_login"
    NEEDS_STRAVA_AUTH = "needs_strava_auth"
    DISCONNECTED = "disconnected"  # the athlete revoked our Strava access


@dataclass(frozen=True, slots=True)
class Account:
    """Links one Garmin login and one Strava athlete (`USER#{id}` / `ACCOUNT`)."""

    user_id: str
    status: AccountStatus = AccountStatus.ACTIVE
    status_detail: str = ""
    strava_athlete_id: int | None = None
    # False while an operator has paused the account (`accounts pause`): no cycle
    # starts, and a running one stops before its next activity.
    enabled: bool = True
    paused_at: datetime | None = None
    # Garmin answered 429: no Garmin request for this account before this time.
    garmin_backoff_until: datetime | None = None
    # When Garmin's first 429 of the current spell came: back-offs that follow each
    # other without a Garmin answer in between keep it (`garmin.backoff_long`).
    garmin_backoff_since: datetime | None = None
    # Garmin answered 403 (it refuses this network or client): no Garmin request before
    # `garmin_refused_until`; `garmin_refusals` in a row double the wait (1 h .. 24 h);
    # `garmin_refused_since` is the first of them (`garmin.network_refused`).
    garmin_refused_until: datetime | None = None
    garmin_refused_since: datetime | None = None
    garmin_refusals: int = 0
    # Strava activities starting at or after this time are all in the local mirror,
    # so the existence check may answer from the mirror alone.
    mirror_covers_since: datetime | None = None
    created_at: datetime | None = None
    last_cycle_at: datetime | None = None
    last_cycle_ok: bool | None = None
    last_cycle_summary: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StravaTokens:
    """`USER#{id}` / `TOKEN#STRAVA`. `version` grows by one on every write (CAS)."""

    access_token: str
    refresh_token: str
    expires_at: int  # epoch seconds
    scope: str | None = None
    athlete_id: int | None = None
    version: int = 0

    def __repr__(self) -> str:  # secrets never reach a log line or a traceback
        return (
            f"StravaTokens(expires_at={self.expires_at}, scope={self.scope!r}, "
            f"athlete_id={self.athlete_id}, version={self.version})"
        )


@dataclass(frozen=True, slots=True)
class GarminTokens:
    """`USER#{id}` / `TOKEN#GARMIN`: garminconnect's `client.dumps()` JSON."""

    blob: str
    version: int = 0

    def __repr__(self) -> str:
        return f"GarminTokens(version={self.version})"


@dataclass(frozen=True, slots=True)
class GarminActivity:
    """One row of Garmin's activity list, parsed and checked."""

    activity_id: int
    name: str  # one line, no control characters, bounded (domain.text.clean_name)
    type_key: str  # normalized: lower case, no `_v2` suffix
    start_utc: datetime  # aware, UTC, within domain.upload_rules' plausible bounds
    elapsed_seconds: float
    distance_m: float | None
    manual: bool
    family: str  # "run", "ride", ... (domain.activity_types.FAMILIES)
    indoor: bool  # uploaded with Strava's trainer flag
    description: str = ""  # the Garmin description, cleaned; "" when it has none


@dataclass(frozen=True, slots=True)
class StravaActivity:
    """The fields of a Strava activity summary that matching and the mirror need."""

    activity_id: int
    athlete_id: int | None
    name: str
    sport_type: str
    start_utc: datetime  # aware, UTC
    elapsed_seconds: int
    moving_seconds: int | None
    distance_m: float | None
    total_elevation_gain: float | None
    external_id: str | None
    upload_id: int | None
    private: bool
    manual: bool


class UploadOutcome(StrEnum):
    PENDING = "pending"  # intent recorded; the upload request may or may not have happened
    PROCESSING = "processing"  # Strava accepted the file; processing not settled yet
    FAILED = "failed"  # will be retried at next_retry_at
    UPLOADED = "uploaded"
    DUPLICATE = "duplicate"  # Strava said "duplicate of activity N"
    EXISTS = "exists"  # matched an activity already on Strava
    SKIPPED = "skipped"  # nothing to upload (manual activity, bad file, ...)
    DEAD = "dead"  # gave up after the last attempt

    @property
    def settled(self) -> bool:
        return self in _SETTLED


_SETTLED = frozenset(
    {
        UploadOutcome.UPLOADED,
        UploadOutcome.DUPLICATE,
        UploadOutcome.EXISTS,
        UploadOutcome.SKIPPED,
        UploadOutcome.DEAD,
    }
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """`USER#{id}` / `UPLOAD#GARMIN#{garminActivityId}`."""

    user_id: str
    garmin_activity_id: int
    external_id: str
    outcome: UploadOutcome
    updated_at: datetime
    activity_name: str = ""
    type_key: str = ""
    start_utc: datetime | None = None
    attempts: int = 0
    strava_activity_id: int | None = None
    upload_id: int | None = None
    detail: str = ""  # why skipped / last error / how it was matched
    next_retry_at: datetime | None = None
    # Gear, feed muting and renames set on Strava after the upload (one PUT each);
    # None for entries without any (and for every entry from before them).
    finish: StravaFinish | None = None

    @property
    def finish_owed(self) -> bool:
        """A PUT is still to be sent for this upload."""
        return self.finish is not None and self.finish.owed is not None


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """What Strava says about one upload (POST /uploads or GET /uploads/{id})."""

    upload_id: int
    status: str
    error: str | None
    activity_id: int | None
    external_id: str | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """`USER#{id}` / `AUDIT#{iso time}#{id}`, kept for a retention period."""

    user_id: str
    at: datetime
    kind: str  # stable event name, e.g. "sync.cycle", "garmin.auth_failed"
    event_id: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Workout:
    """A normalized Strava activity in the mirror (`WORKOUT#STRAVA#{activityId}`)."""

    user_id: str
    activity_id: int
    athlete_id: int
    name: str
    sport_type: str
    start_utc: datetime  # aware, UTC
    elapsed_time: int
    moving_time: int | None
    distance: float | None
    total_elevation_gain: float | None
    external_id: str | None
    upload_id: int | None
    is_private: bool
    is_deleted: bool
    updated_at: datetime  # the event/fetch time this row reflects; older writes lose
    raw: dict[str, Any] | None = None
    # When `name`, `sport_type` or `is_private` last changed, for each of them that
    # changed before `updated_at` (update events arrive out of order, per field). A field
    # missing here changed at `updated_at`: a fetch, or a row from before these times.
    field_updated_at: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """An activity file extracted from Garmin's ORIGINAL zip and checked."""

    path: Path
    data_type: str  # Strava's data_type: "fit", "gpx" or "tcx"
    start_utc: datetime | None = None
    sport: str | None = None
