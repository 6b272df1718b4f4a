"""Strava's JSON answers (uploads, activities) read into domain values.

No stravalib here: the adapter hands over the decoded bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from garmin2strava.domain.models import StravaActivity, UploadStatus
from garmin2strava.errors import TransientError

__all__ = ["strava_activity_from_json", "upload_status_from_json"]


def upload_status_from_json(body: Any) -> UploadStatus:
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise TransientError("Strava's upload answer has no id")
    activity_id = body.get("activity_id")
    external_id = body.get("external_id")
    error = body.get("error")
    return UploadStatus(
        upload_id=body["id"],
        status=str(body.get("status") or ""),
        error=str(error) if error else None,
        activity_id=activity_id if isinstance(activity_id, int) and activity_id else None,
        external_id=external_id if isinstance(external_id, str) else None,
    )


def _parse_start(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TransientError("Strava sent an activity without start_date")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TransientError("Strava sent an unreadable start_date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def strava_activity_from_json(raw: Mapping[str, Any]) -> StravaActivity:
    """A SummaryActivity/DetailedActivity JSON object as a domain StravaActivity.

    A row we cannot read raises TransientError: skipping it could upload a duplicate.
    """
    activity_id = raw.get("id")
    elapsed = _int_or_none(raw.get("elapsed_time"))
    if not isinstance(activity_id, int) or elapsed is None:
        raise TransientError("Strava sent an activity without id or elapsed_time")
    athlete = raw.get("athlete")
    external_id = raw.get("external_id")
    return StravaActivity(
        activity_id=activity_id,
        athlete_id=_int_or_none(athlete.get("id")) if isinstance(athlete, dict) else None,
        name=str(raw.get("name") or ""),
        sport_type=str(raw.get("sport_type") or raw.get("type") or ""),
        start_utc=_parse_start(raw.get("start_date")),
        elapsed_seconds=elapsed,
        moving_seconds=_int_or_none(raw.get("moving_time")),
        distance_m=_float_or_none(raw.get("distance")),
        total_elevation_gain=_float_or_none(raw.get("total_elevation_gain")),
        external_id=external_id if isinstance(external_id, str) else None,
        upload_id=_int_or_none(raw.get("upload_id")),
        private=bool(raw.get("private")),
        manual=bool(raw.get("manual")),
    )
