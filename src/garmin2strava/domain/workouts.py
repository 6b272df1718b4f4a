"""The mirror's row: a Strava activity normalized into a `Workout`. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from garmin2strava.domain.models import Workout
from garmin2strava.errors import InvalidActivity

__all__ = ["apply_update", "normalize_activity", "soft_delete"]


# The Workout fields an update event can carry (`title`, `type`, `private`).
_UPDATE_FIELDS = ("name", "sport_type", "is_private")


def normalize_activity(raw: Mapping[str, Any], *, user_id: str, updated_at: datetime) -> Workout:
    """A `Workout` from a DetailedActivity or SummaryActivity JSON object."""
    athlete = raw.get("athlete")
    athlete_id = athlete.get("id") if isinstance(athlete, dict) else None
    return Workout(
        user_id=user_id,
        activity_id=_int(raw, "id"),
        athlete_id=_as_int(athlete_id, "athlete.id"),
        name=_str(raw, "name"),
        # `type` is the legacy coarse field; older payloads carry only that one.
        sport_type=_str(raw, "sport_type") if raw.get("sport_type") else _str(raw, "type"),
        start_utc=_utc(raw.get("start_date")),
        elapsed_time=_int(raw, "elapsed_time"),
        moving_time=_opt_int(raw, "moving_time"),
        distance=_opt_float(raw, "distance"),
        total_elevation_gain=_opt_float(raw, "total_elevation_gain"),
        external_id=_opt_str(raw, "external_id"),
        upload_id=_opt_int(raw, "upload_id"),
        is_private=raw.get("private") is True,
        is_deleted=False,
        updated_at=updated_at,  # with no field_updated_at: every field is as of the fetch
        raw=dict(raw),
    )


def apply_update(workout: Workout, updates: Mapping[str, str], event_time: datetime) -> Workout:
    """Title, type and privacy as an update event states them; other keys are ignored.

    Each field takes the event only when it is not older than that field's last change,
    so a late title still lands after a newer type. A deleted row ignores events older
    than itself. Returns `workout` itself when nothing applies."""
    if workout.is_deleted and event_time < workout.updated_at:
        return workout
    times = _field_times(workout)
    raw = dict(workout.raw) if workout.raw is not None else None
    changes: dict[str, Any] = {}
    if "title" in updates and event_time >= times["name"]:
        changes["name"] = updates["title"]
        if raw is not None:
            raw["name"] = updates["title"]
    if "type" in updates and event_time >= times["sport_type"]:
        changes["sport_type"] = updates["type"]
        if raw is not None:
            raw["type"] = raw["sport_type"] = updates["type"]
    if "private" in updates and event_time >= times["is_private"]:
        changes["is_private"] = updates["private"].lower() == "true"
        if raw is not None:
            raw["private"] = changes["is_private"]
    if not changes:
        return workout
    times |= dict.fromkeys(changes, event_time)
    updated_at = max(event_time, workout.updated_at)
    return replace(
        workout,
        raw=raw,
        updated_at=updated_at,
        field_updated_at=_changed_before(times, updated_at),
        **changes,
    )


def soft_delete(workout: Workout, event_time: datetime) -> Workout:
    """The row stays; only `is_deleted` says the activity is gone."""
    updated_at = max(event_time, workout.updated_at)
    return replace(
        workout,
        is_deleted=True,
        updated_at=updated_at,
        field_updated_at=_changed_before(_field_times(workout), updated_at),
    )


def _field_times(workout: Workout) -> dict[str, datetime]:
    """When each field an update event can carry last changed in this row."""
    return {name: workout.field_updated_at.get(name, workout.updated_at) for name in _UPDATE_FIELDS}


def _changed_before(times: Mapping[str, datetime], updated_at: datetime) -> dict[str, datetime]:
    # Only the fields older than the row are kept: a missing one changed at updated_at.
    return {name: at for name, at in times.items() if at < updated_at}


def _as_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidActivity(f"{name} must be an integer")
    return value


def _int(raw: Mapping[str, Any], name: str) -> int:
    return _as_int(raw.get(name), name)


def _opt_int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    return None if value is None else _as_int(value, name)


def _opt_float(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidActivity(f"{name} must be a number")
    return float(value)


def _str(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise InvalidActivity(f"{name} must be a string")
    return value


def _opt_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else _str(raw, name)


def _utc(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidActivity("start_date must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidActivity("start_date is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidActivity("start_date has no time zone")
    return parsed.astimezone(UTC)
