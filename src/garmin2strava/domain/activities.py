"""Garmin activity-list records -> GarminActivity, and the type filters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from garmin2strava.domain.models import GarminActivity
from garmin2strava.errors import InvalidActivity

__all__ = [
    "external_id_for",
    "is_indoor",
    "is_our_external_id",
    "normalize_type_key",
    "parse_activity",
    "sport_family",
    "strava_sport_family",
]

_SUFFIX = re.compile(r"_v\d+$")
_GARMIN_TIME = "%Y-%m-%d %H:%M:%S"
EXTERNAL_ID_PREFIX = "garmin2strava_"


def normalize_type_key(type_key: str) -> str:
    """`stand_up_paddleboarding_v2` -> `stand_up_paddleboarding`."""
    return _SUFFIX.sub("", type_key.strip().lower())


def parse_activity(record: Mapping[str, Any]) -> GarminActivity:
    """Check one activity-list record; InvalidActivity names the missing or bad field."""
    activity_id = record.get("activityId")
    if isinstance(activity_id, bool) or not isinstance(activity_id, int) or activity_id <= 0:
        raise InvalidActivity("activity record has no valid activityId")
    type_info = record.get("activityType")
    type_key = type_info.get("typeKey") if isinstance(type_info, Mapping) else None
    if not isinstance(type_key, str) or not type_key:
        raise InvalidActivity(f"activity {activity_id}: missing activityType.typeKey")
    elapsed = record.get("elapsedDuration", record.get("duration"))
    if isinstance(elapsed, bool) or not isinstance(elapsed, int | float) or elapsed < 0:
        raise InvalidActivity(f"activity {activity_id}: missing or bad elapsedDuration")
    distance = record.get("distance")
    if isinstance(distance, bool) or not isinstance(distance, int | float | None):
        raise InvalidActivity(f"activity {activity_id}: bad distance")
    name = record.get("activityName")
    return GarminActivity(
        activity_id=activity_id,
        name=name.strip() if isinstance(name, str) else "",
        type_key=normalize_type_key(type_key),
        start_utc=_start_utc(record, activity_id),
        elapsed_seconds=float(elapsed),
        distance_m=float(distance) if distance is not None else None,
        manual=record.get("manualActivity") is True,
    )


def _start_utc(record: Mapping[str, Any], activity_id: int) -> datetime:
    gmt = record.get("startTimeGMT")
    if isinstance(gmt, str):
        try:
            return datetime.strptime(gmt, _GARMIN_TIME).replace(tzinfo=UTC)
        except ValueError:
            pass
    begin = record.get("beginTimestamp")
    if isinstance(begin, int) and not isinstance(begin, bool) and begin > 0:
        return datetime.fromtimestamp(begin / 1000, tz=UTC)
    raise InvalidActivity(f"activity {activity_id}: missing or bad startTimeGMT")


def external_id_for(garmin_activity_id: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{garmin_activity_id}"


def is_our_external_id(value: str | None, garmin_activity_id: int) -> bool:
    """Strava may append the file extension to the external_id we sent."""
    if not value:
        return False
    ours = external_id_for(garmin_activity_id)
    return value == ours or value.startswith(ours + ".")


_INDOOR = frozenset(
    {
        "treadmill_running",
        "indoor_running",
        "indoor_cycling",
        "virtual_ride",
        "virtual_run",
        "indoor_rowing",
        "indoor_walking",
        "elliptical",
        "stair_climbing",
        "indoor_cardio",
        "lap_swimming",
    }
)


def is_indoor(type_key: str) -> bool:
    """Uploaded with Strava's trainer flag (no GPS track to speak of)."""
    key = normalize_type_key(type_key)
    return key in _INDOOR or key.startswith("indoor_") or "treadmill" in key


_GARMIN_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("run", ("run", "running")),
    ("ride", ("cycling", "biking", "ride", "bmx")),
    ("swim", ("swim",)),
    ("walk", ("walk",)),
    ("hike", ("hik",)),
    ("row", ("rowing",)),
    ("ski", ("ski", "snowboard")),
)

_STRAVA_FAMILIES: dict[str, str] = {
    "Run": "run",
    "TrailRun": "run",
    "VirtualRun": "run",
    "Ride": "ride",
    "MountainBikeRide": "ride",
    "GravelRide": "ride",
    "EBikeRide": "ride",
    "EMountainBikeRide": "ride",
    "VirtualRide": "ride",
    "Velomobile": "ride",
    "Handcycle": "ride",
    "Swim": "swim",
    "Walk": "walk",
    "Hike": "hike",
    "Rowing": "row",
    "VirtualRow": "row",
    "AlpineSki": "ski",
    "BackcountrySki": "ski",
    "NordicSki": "ski",
    "Snowboard": "ski",
}


def sport_family(type_key: str) -> str:
    key = normalize_type_key(type_key)
    for family, needles in _GARMIN_FAMILIES:
        if any(n in key for n in needles):
            return family
    return "other"


def strava_sport_family(sport_type: str) -> str:
    return _STRAVA_FAMILIES.get(sport_type, "other")


def oldest_first(activities: Iterable[GarminActivity]) -> list[GarminActivity]:
    return sorted(activities, key=lambda a: (a.start_utc, a.activity_id))
