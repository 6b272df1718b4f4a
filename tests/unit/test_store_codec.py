"""Item keys and time format shared by the SQLite and DynamoDB stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from garmin2strava.adapters.store import codec


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
    """Keys are spelled exactly as DESIGN.md's data model table."""
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
