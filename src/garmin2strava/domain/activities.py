"""Garmin activity-list records -> GarminActivity.

Garmin's list answers changed shape over the years: older
ones carry `elapsedDuration` in milliseconds, newer ones in seconds, while
`duration` and `movingDuration` have always been seconds. Every value read here is
checked against the others and against plausible bounds, so a hostile or odd record
is refused with its reason (InvalidActivity) instead of breaking a later step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from garmin2strava.domain.activity_types import (
    is_indoor,
    normalize_type_key,
    sport_family,
    strava_sport_family,
)
from garmin2strava.domain.models import GarminActivity
from garmin2strava.domain.text import clean_description, clean_name
from garmin2strava.errors import InvalidActivity

__all__ = [
    "EARLIEST_START",
    "LATEST_START",
    "MAX_ELAPSED_S",
    "elapsed_seconds",
    "external_id_for",
    "is_indoor",
    "is_our_external_id",
    "is_plausible_start",
    "normalize_type_key",
    "oldest_first",
    "parse_activity",
    "sport_family",
    "strava_sport_family",
]

EXTERNAL_ID_PREFIX = "garmin2strava_"

# Starts outside these bounds are no recording of a real watch: refused, so that no
# later date arithmetic (query windows, tolerances, retry times) can overflow.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_START = _EPOCH
LATEST_START = datetime(2100, 1, 1, tzinfo=UTC)
# startTimeGMT and beginTimestamp name the same instant; a record where they are
# further apart than any time zone offset is corrupt.
_START_AGREEMENT = timedelta(days=1)
# Longer than a week is no single activity (and most likely a unit mix-up).
MAX_ELAPSED_S = 7 * 24 * 3600.0
# A value this many times the reference is taken as milliseconds: the geometric middle
# between "seconds" (ratio about 1) and "milliseconds" (ratio about 1000).
_MS_RATIO = math.sqrt(1000.0)


def parse_activity(record: Mapping[str, Any]) -> GarminActivity:
    """Check one activity-list record; InvalidActivity names the missing or bad field."""
    activity_id = record.get("activityId")
    if isinstance(activity_id, bool) or not isinstance(activity_id, int) or activity_id <= 0:
        raise InvalidActivity("activity record has no valid activityId")
    type_info = record.get("activityType")
    type_info = type_info if isinstance(type_info, Mapping) else {}
    type_key = type_info.get("typeKey")
    if not isinstance(type_key, str) or not type_key.strip():
        raise InvalidActivity(f"activity {activity_id}: missing activityType.typeKey")
    type_id = _int_or_none(type_info.get("typeId"))
    parent_type_id = _int_or_none(type_info.get("parentTypeId"))
    start = _start_utc(record, activity_id)
    distance = record.get("distance")
    if isinstance(distance, bool) or not isinstance(distance, int | float | None):
        raise InvalidActivity(f"activity {activity_id}: bad distance")
    if distance is not None and (not math.isfinite(distance) or distance < 0):
        raise InvalidActivity(f"activity {activity_id}: bad distance")
    return GarminActivity(
        activity_id=activity_id,
        name=clean_name(record.get("activityName")),
        type_key=normalize_type_key(type_key),
        start_utc=start,
        elapsed_seconds=elapsed_seconds(record, start, activity_id),
        distance_m=float(distance) if distance is not None else None,
        manual=record.get("manualActivity") is True,
        family=sport_family(type_key, type_id=type_id, parent_type_id=parent_type_id),
        indoor=is_indoor(type_key, parent_type_id=parent_type_id),
        description=clean_description(record.get("description")),
    )


def is_plausible_start(moment: datetime) -> bool:
    return EARLIEST_START <= moment < LATEST_START


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    """A finite, non-negative JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _garmin_time(value: object) -> datetime | None:
    """`2026-01-08 14:10:21` (list) or `2026-01-08T14:10:21.0` (detail), UTC; None if
    it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_ms(value: object) -> datetime | None:
    number = _int_or_none(value)
    if number is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=number)
    except OverflowError:
        return None


def _start_utc(record: Mapping[str, Any], activity_id: int) -> datetime:
    """startTimeGMT, else beginTimestamp (a multisport parent may have it null)."""
    gmt = _garmin_time(record.get("startTimeGMT"))
    raw_begin = record.get("beginTimestamp")
    begin = _epoch_ms(raw_begin)
    if raw_begin is not None and begin is None:
        raise InvalidActivity(f"activity {activity_id}: bad beginTimestamp {str(raw_begin)[:40]}")
    if gmt is not None and begin is not None and abs(gmt - begin) > _START_AGREEMENT:
        msg = f"activity {activity_id}: beginTimestamp {raw_begin} disagrees with startTimeGMT"
        raise InvalidActivity(msg)
    start = gmt or begin
    if start is None:
        raise InvalidActivity(f"activity {activity_id}: missing or bad startTimeGMT")
    if not is_plausible_start(start):
        msg = (
            f"activity {activity_id}: start {start.isoformat()} is outside "
            f"{EARLIEST_START.year}-{LATEST_START.year - 1}"
        )
        raise InvalidActivity(msg)
    return start


def _span_s(record: Mapping[str, Any], start: datetime) -> float | None:
    """Seconds from the start to the end the record gives, if it gives a sane one."""
    end = _garmin_time(record.get("endTimeGMT"))
    if end is None:
        begin_ms = _int_or_none(record.get("beginTimestamp"))
        end_ms = _int_or_none(record.get("endTimestamp"))
        if begin_ms is not None and end_ms is not None:
            span = (end_ms - begin_ms) / 1000
            return span if 0 < span <= MAX_ELAPSED_S else None
        return None
    span = (end - start).total_seconds()
    return span if 0 < span <= MAX_ELAPSED_S else None


def elapsed_seconds(record: Mapping[str, Any], start: datetime, activity_id: int) -> float:
    """The elapsed time in seconds, whichever unit `elapsedDuration` came in.

    Its reference is the span from start to end where the record gives one, else the
    longer of `duration` and `movingDuration` (timer and moving time, never longer
    than the elapsed time). A value about a thousand times its reference is
    milliseconds; with no reference at all it is taken as seconds, within bounds.
    """
    elapsed = _number(record.get("elapsedDuration"))
    timers = [
        t
        for t in (_number(record.get("duration")), _number(record.get("movingDuration")))
        if t is not None and t > 0
    ]
    reference = _span_s(record, start) or (max(timers) if timers else None)
    if elapsed is None:
        value = reference
    elif reference is not None and elapsed / reference >= _MS_RATIO:
        value = elapsed / 1000
    else:
        value = elapsed
    if value is None:
        raise InvalidActivity(f"activity {activity_id}: missing or bad elapsedDuration")
    if value > MAX_ELAPSED_S:
        msg = f"activity {activity_id}: elapsed time {value:.0f} s is over {MAX_ELAPSED_S:.0f} s"
        raise InvalidActivity(msg)
    return value


def external_id_for(garmin_activity_id: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{garmin_activity_id}"


def is_our_external_id(value: str | None, garmin_activity_id: int) -> bool:
    """Strava may append the file extension to the external_id we sent."""
    if not value:
        return False
    ours = external_id_for(garmin_activity_id)
    return value == ours or value.startswith(ours + ".")


def oldest_first(activities: Iterable[GarminActivity]) -> list[GarminActivity]:
    return sorted(activities, key=lambda a: (a.start_utc, a.activity_id))
