"""Item keys and time format shared by the SQLite and DynamoDB stores."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from garmin2strava.adapters.store import codec
from garmin2strava.domain.models import Workout


def test_time_format_is_fixed_width_utc_and_sorts_like_time() -> None:
    """Stored times are one fixed-width UTC form, so string order is time order."""
    base = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    times = [base, base + timedelta(microseconds=500), base + timedelta(seconds=1)]
    texts = [codec.format_time(t) for t in times]
    assert texts[0] == "2025-05-01T07:00:00.000000Z"
    assert len({len(t) for t in texts}) == 1
    assert sorted(texts) == texts
    assert [codec.parse_time(t) for t in texts] == times


def test_time_in_another_zone_is_stored_as_utc() -> None:
    """An aware non-UTC datetime is converted, not stored with its offset."""
    local = datetime(2025, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert codec.format_time(local) == "2025-05-01T07:00:00.000000Z"


def test_naive_time_is_refused() -> None:
    """A naive datetime is an error rather than a guess."""
    with pytest.raises(ValueError, match="naive"):
        codec.format_time(datetime(2025, 5, 1))  # noqa: DTZ001 - naive on purpose


def test_keys_follow_the_data_model() -> None:
    """Keys are spelled exactly as docs/architecture.md's data model table."""
    at = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    assert codec.user_pk("u1") == "USER#u1"
    assert codec.athlete_pk(42) == "ATHLETE#42"
    assert codec.upload_sk(123) == "UPLOAD#GARMIN#123"
    assert codec.workout_sk(456) == "WORKOUT#STRAVA#456"
    assert codec.audit_sk(at, "e1") == "AUDIT#2025-05-01T07:00:00.000000Z#e1"
    assert (codec.STRAVA_TOKEN_SK, codec.GARMIN_TOKEN_SK, codec.LEASE_SK) == (
        "TOKEN#STRAVA",
        "TOKEN#GARMIN",
        "LEASE#SYNC",
    )


def test_workout_sort_keys_order_by_start_then_id() -> None:
    """The start-time sort key orders by start, then numerically by id, within bounds."""
    at = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    keys = [
        codec.workout_lsi1sk(at, 9),
        codec.workout_lsi1sk(at, 10),
        codec.workout_lsi1sk(at + timedelta(seconds=1), 1),
    ]
    assert sorted(keys) == keys
    assert codec.workout_lsi1sk(at) <= keys[0] < codec.workout_lsi1sk(at) + "$"


def _workout(**changes: Any) -> Workout:
    at = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    workout = Workout(
        user_id="u1",
        activity_id=7,
        athlete_id=42,
        name="Morning Run",
        sport_type="Run",
        start_date=at,
        elapsed_time=1800,
        moving_time=None,
        distance=5000.0,
        total_elevation_gain=None,
        external_id=None,
        upload_id=None,
        is_private=False,
        is_deleted=False,
        updated_at=at + timedelta(seconds=200),
        raw={"id": 7, "name": "Morning Run"},
    )
    return replace(workout, **changes)


def test_workout_field_times_round_trip() -> None:
    """Per-field change times survive encode and decode, under the item's attribute names."""
    at = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    workout = _workout(field_updated_at={"name": at, "is_private": at + timedelta(seconds=1)})
    item = codec.workout_to_item(workout)
    assert set(item["fieldUpdatedAt"]) == {"name", "isPrivate"}
    assert codec.workout_from_item(item) == workout


def test_workout_item_without_field_times_still_decodes() -> None:
    """A row written before per-field times decodes with every field as of updatedAt."""
    legacy = {
        "userId": "u1",
        "activityId": 7,
        "athleteId": 42,
        "name": "Morning Run",
        "sportType": "Run",
        "startDate": "2025-05-01T07:00:00.000000Z",
        "elapsedTime": 1800,
        "movingTime": None,
        "distance": 5000.0,
        "totalElevationGain": None,
        "externalId": None,
        "uploadId": None,
        "isPrivate": False,
        "isDeleted": False,
        "updatedAt": "2025-05-01T07:03:20.000000Z",
        "raw": {"id": 7, "name": "Morning Run"},
    }
    decoded = codec.workout_from_item(legacy)
    assert decoded == _workout()
    assert decoded.field_updated_at == {}
    assert codec.workout_to_item(decoded) == legacy | {"fieldUpdatedAt": {}}
