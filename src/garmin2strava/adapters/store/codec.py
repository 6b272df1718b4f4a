"""Item keys and model <-> plain-dict codecs shared by the SQLite and DynamoDB stores.

Attribute names are the DynamoDB ones (camelCase), datetimes fixed-width ISO 8601 UTC
strings (`2024-05-01T07:00:00.000000Z`) so string order is time order. The keys and
the secondary keys (`LSI1SK`, the sparse `GSI1PK`/`GSI1SK` of unsettled ledger
entries): docs/architecture.md, "Data model" and "Secondary keys".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from garmin2strava.domain.idle import LedgerMark
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    AuditEvent,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
    Workout,
)
from garmin2strava.domain.strava_finish import StravaFinish
from garmin2strava.errors import StoreConflict

__all__ = [
    "ACCOUNTS_INDEX_SK",
    "ACCOUNTS_PK",
    "ACCOUNT_SK",
    "APP_STATE_PK",
    "ATHLETE_USER_SK",
    "AUDIT_PREFIX",
    "GARMIN_TOKEN_SK",
    "LEASE_SK",
    "LEDGER_MARK_SK",
    "SETTLED_OUTCOMES",
    "STRAVA_TOKEN_SK",
    "UPLOAD_PREFIX",
    "WORKOUT_PREFIX",
    "account_from_item",
    "account_to_item",
    "app_state_sk",
    "athlete_id_of_pk",
    "athlete_pk",
    "athlete_pk_end",
    "athlete_pk_prefix",
    "audit_from_item",
    "audit_sk",
    "audit_to_item",
    "format_time",
    "in_uploaders_index",
    "intent_refused",
    "ledger_from_item",
    "ledger_lsi1sk",
    "ledger_mark_from_item",
    "ledger_to_item",
    "parse_time",
    "prefix_range",
    "strava_tokens_from_plain",
    "strava_tokens_to_plain",
    "unsettled_gsi1pk",
    "upload_sk",
    "user_id_of_pk",
    "user_pk",
    "workout_from_item",
    "workout_lsi1sk",
    "workout_sk",
    "workout_to_item",
]

ACCOUNT_SK = "ACCOUNT"
ACCOUNTS_PK = "ACCOUNTS"
ATHLETE_USER_SK = "USER"
STRAVA_TOKEN_SK = "TOKEN#STRAVA"  # noqa: S105 - a sort key, not a secret
GARMIN_TOKEN_SK = "TOKEN#GARMIN"  # noqa: S105 - a sort key, not a secret
LEASE_SK = "LEASE#SYNC"
# The idle fast path's mark (domain/idle.py), beside the ledger it summarises.
LEDGER_MARK_SK = "LEDGER#MARK"
# DynamoDB: the set of user ids in the registry's partition, so an invocation can read
# every account by key in one BatchGetItem instead of a Query first.
ACCOUNTS_INDEX_SK = "INDEX"
UPLOAD_PREFIX = "UPLOAD#GARMIN#"
WORKOUT_PREFIX = "WORKOUT#STRAVA#"
AUDIT_PREFIX = "AUDIT#"
APP_STATE_PK = "APP"
_ID_WIDTH = 20  # zero-padded ids keep string order equal to numeric order


# -- keys -------------------------------------------------------------------------------
def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def athlete_pk(athlete_id: int) -> str:
    return f"ATHLETE#{athlete_id}"


def athlete_pk_prefix() -> str:
    return "ATHLETE#"


def athlete_pk_end() -> str:
    """The first key after every `athlete_pk` ("$" follows "#")."""
    return "ATHLETE$"


def user_id_of_pk(pk: str) -> str:
    return pk.removeprefix("USER#")


def athlete_id_of_pk(pk: str) -> int:
    return int(pk.removeprefix(athlete_pk_prefix()))


def upload_sk(garmin_activity_id: int) -> str:
    return f"{UPLOAD_PREFIX}{garmin_activity_id}"


def workout_sk(activity_id: int) -> str:
    return f"{WORKOUT_PREFIX}{activity_id}"


def audit_sk(at: datetime, event_id: str) -> str:
    return f"{AUDIT_PREFIX}{format_time(at)}#{event_id}"


def app_state_sk(key: str) -> str:
    return f"STATE#{key}"


def workout_lsi1sk(start: datetime, activity_id: int | None = None) -> str:
    """Sort key by start time; without an id it is a bound for range queries."""
    suffix = "" if activity_id is None else f"#{activity_id:0{_ID_WIDTH}d}"
    return f"WORKOUT#{format_time(start)}{suffix}"


def ledger_lsi1sk(entry: LedgerEntry) -> str:
    # Entries without a start time sort as the oldest ('#' < any digit).
    start = format_time(entry.start_utc) if entry.start_utc else ""
    return f"UPLOAD#{start}#{entry.garmin_activity_id:0{_ID_WIDTH}d}"


# The outcomes an intent (pending) write may never replace, as stored.
SETTLED_OUTCOMES = tuple(sorted(o.value for o in UploadOutcome if o.settled))


def intent_refused(garmin_activity_id: int) -> StoreConflict:
    """What both stores raise when an intent meets a settled ledger entry."""
    msg = (
        f"ledger entry for Garmin activity {garmin_activity_id} is already "
        "settled; not recording a new upload intent"
    )
    return StoreConflict(msg)


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) of the sort keys that start with `prefix` (its last character bumped)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def unsettled_gsi1pk(user_id: str) -> str:
    return f"UNSETTLED#USER#{user_id}"


# -- times ------------------------------------------------------------------------------
def format_time(value: datetime) -> str:
    """Fixed-width ISO 8601 UTC; refuses naive datetimes rather than guess their zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        msg = "naive datetime given to the store; use an aware (UTC) datetime"
        raise ValueError(msg)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _opt_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _parse_opt_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(str(value))


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- accounts ---------------------------------------------------------------------------
def account_to_item(account: Account) -> dict[str, Any]:
    return {
        "userId": account.user_id,
        "status": account.status.value,
        "statusDetail": account.status_detail,
        "stravaAthleteId": account.strava_athlete_id,
        "enabled": account.enabled,
        "pausedAt": _opt_time(account.paused_at),
        "garminBackoffUntil": _opt_time(account.garmin_backoff_until),
        "garminBackoffSince": _opt_time(account.garmin_backoff_since),
        "garminRefusedUntil": _opt_time(account.garmin_refused_until),
        "garminRefusedSince": _opt_time(account.garmin_refused_since),
        "garminRefusals": account.garmin_refusals,
        "mirrorCoversSince": _opt_time(account.mirror_covers_since),
        "createdAt": _opt_time(account.created_at),
        "lastCycleAt": _opt_time(account.last_cycle_at),
        "lastCycleOk": account.last_cycle_ok,
        "lastCycleSummary": dict(account.last_cycle_summary),
    }


def account_from_item(item: dict[str, Any]) -> Account:
    ok = item.get("lastCycleOk")
    return Account(
        user_id=str(item["userId"]),
        status=AccountStatus(item.get("status", AccountStatus.ACTIVE.value)),
        status_detail=str(item.get("statusDetail", "")),
        strava_athlete_id=_opt_int(item.get("stravaAthleteId")),
        enabled=bool(item.get("enabled", True)),
        paused_at=_parse_opt_time(item.get("pausedAt")),
        garmin_backoff_until=_parse_opt_time(item.get("garminBackoffUntil")),
        garmin_backoff_since=_parse_opt_time(item.get("garminBackoffSince")),
        garmin_refused_until=_parse_opt_time(item.get("garminRefusedUntil")),
        garmin_refused_since=_parse_opt_time(item.get("garminRefusedSince")),
        garmin_refusals=int(item.get("garminRefusals") or 0),
        mirror_covers_since=_parse_opt_time(item.get("mirrorCoversSince")),
        created_at=_parse_opt_time(item.get("createdAt")),
        last_cycle_at=_parse_opt_time(item.get("lastCycleAt")),
        last_cycle_ok=None if ok is None else bool(ok),
        last_cycle_summary={
            str(k): int(v) for k, v in (item.get("lastCycleSummary") or {}).items()
        },
    )


# -- tokens (the plaintext that gets encrypted; the version lives outside) -------------
def strava_tokens_to_plain(tokens: StravaTokens) -> dict[str, Any]:
    return {
        "accessToken": tokens.access_token,
        "refreshToken": tokens.refresh_token,
        "expiresAt": tokens.expires_at,
        "scope": tokens.scope,
        "athleteId": tokens.athlete_id,
    }


def strava_tokens_from_plain(plain: dict[str, Any], *, version: int) -> StravaTokens:
    return StravaTokens(
        access_token=str(plain["accessToken"]),
        refresh_token=str(plain["refreshToken"]),
        expires_at=int(plain["expiresAt"]),
        scope=None if plain.get("scope") is None else str(plain["scope"]),
        athlete_id=_opt_int(plain.get("athleteId")),
        version=version,
    )


# -- upload ledger ----------------------------------------------------------------------
def ledger_to_item(entry: LedgerEntry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "userId": entry.user_id,
        "garminActivityId": entry.garmin_activity_id,
        "externalId": entry.external_id,
        "outcome": entry.outcome.value,
        "updatedAt": format_time(entry.updated_at),
        "activityName": entry.activity_name,
        "typeKey": entry.type_key,
        "startDate": _opt_time(entry.start_utc),
        "attempts": entry.attempts,
        "stravaActivityId": entry.strava_activity_id,
        "uploadId": entry.upload_id,
        "detail": entry.detail,
        "nextRetryAt": _opt_time(entry.next_retry_at),
    }
    if entry.finish is not None:  # absent on entries without one: items stay as they were
        item["finish"] = entry.finish.to_plain()
    return item


def in_uploaders_index(entry: LedgerEntry) -> bool:
    """Whether the entry belongs in the sparse GSI1: the uploader still has to finish
    it (not settled, or a PUT is owed on Strava for an upload of ours)."""
    if not entry.outcome.settled:
        return True
    return entry.outcome is UploadOutcome.UPLOADED and entry.finish_owed


def ledger_from_item(item: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        user_id=str(item["userId"]),
        garmin_activity_id=int(item["garminActivityId"]),
        external_id=str(item["externalId"]),
        outcome=UploadOutcome(item["outcome"]),
        updated_at=parse_time(str(item["updatedAt"])),
        activity_name=str(item.get("activityName", "")),
        type_key=str(item.get("typeKey", "")),
        start_utc=_parse_opt_time(item.get("startDate")),
        attempts=int(item.get("attempts", 0)),
        strava_activity_id=_opt_int(item.get("stravaActivityId")),
        upload_id=_opt_int(item.get("uploadId")),
        detail=str(item.get("detail", "")),
        next_retry_at=_parse_opt_time(item.get("nextRetryAt")),
        finish=StravaFinish.from_plain(item.get("finish")),
    )


# -- audit ------------------------------------------------------------------------------
def audit_to_item(event: AuditEvent) -> dict[str, Any]:
    return {
        "userId": event.user_id,
        "at": format_time(event.at),
        "kind": event.kind,
        "eventId": event.event_id,
        "detail": dict(event.detail),
    }


def audit_from_item(item: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        user_id=str(item["userId"]),
        at=parse_time(str(item["at"])),
        kind=str(item["kind"]),
        event_id=str(item["eventId"]),
        detail=dict(item.get("detail") or {}),
    )


# -- mirrored workouts ------------------------------------------------------------------
# `Workout.field_updated_at` keys -> the item attribute each one times.
_FIELD_ATTRIBUTES = {"name": "name", "sport_type": "sportType", "is_private": "isPrivate"}


def workout_to_item(workout: Workout) -> dict[str, Any]:
    return {
        "userId": workout.user_id,
        "activityId": workout.activity_id,
        "athleteId": workout.athlete_id,
        "name": workout.name,
        "sportType": workout.sport_type,
        "startDate": format_time(workout.start_utc),
        "elapsedTime": workout.elapsed_time,
        "movingTime": workout.moving_time,
        "distance": workout.distance,
        "totalElevationGain": workout.total_elevation_gain,
        "externalId": workout.external_id,
        "uploadId": workout.upload_id,
        "isPrivate": workout.is_private,
        "isDeleted": workout.is_deleted,
        "updatedAt": format_time(workout.updated_at),
        "fieldUpdatedAt": {
            _FIELD_ATTRIBUTES[name]: format_time(at)
            for name, at in workout.field_updated_at.items()
        },
        "raw": workout.raw,
    }


def workout_from_item(item: dict[str, Any]) -> Workout:
    raw = item.get("raw")
    field_times = item.get("fieldUpdatedAt") or {}
    return Workout(
        user_id=str(item["userId"]),
        activity_id=int(item["activityId"]),
        athlete_id=int(item["athleteId"]),
        name=str(item.get("name", "")),
        sport_type=str(item.get("sportType", "")),
        start_utc=parse_time(str(item["startDate"])),
        elapsed_time=int(item.get("elapsedTime", 0)),
        moving_time=_opt_int(item.get("movingTime")),
        distance=_opt_float(item.get("distance")),
        total_elevation_gain=_opt_float(item.get("totalElevationGain")),
        external_id=None if item.get("externalId") is None else str(item["externalId"]),
        upload_id=_opt_int(item.get("uploadId")),
        is_private=bool(item.get("isPrivate", False)),
        is_deleted=bool(item.get("isDeleted", False)),
        updated_at=parse_time(str(item["updatedAt"])),
        raw=None if raw is None else dict(raw),
        # Rows written before per-field times have none: all fields as of updatedAt.
        field_updated_at={
            name: parse_time(str(field_times[attribute]))
            for name, attribute in _FIELD_ATTRIBUTES.items()
            if attribute in field_times
        },
    )


def ledger_mark_from_item(item: dict[str, Any] | None) -> LedgerMark:
    """The `LEDGER#MARK` item read back; no item: version 0, never found idle."""
    if item is None:
        return LedgerMark()
    until = str(item.get("idleUntil") or "")
    return LedgerMark(
        version=int(item.get("version", 0)),
        idle_key=str(item.get("idleKey") or "") or None,
        idle_until=parse_time(until) if until else None,
    )
