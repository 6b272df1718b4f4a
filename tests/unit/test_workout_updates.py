"""apply_update keeps each of title/type/private as of its own newest change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from garmin2strava.domain.models import Workout
from garmin2strava.domain.workouts import apply_update, normalize_activity, soft_delete

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
ACTIVITY: dict[str, Any] = {
    "id": 7,
    "athlete": {"id": 134815},
    "name": "Morning Run",
    "sport_type": "Run",
    "start_date": "2025-06-01T06:00:00Z",
    "elapsed_time": 1800,
    "private": False,
}


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fetched(seconds: int = 0) -> Workout:
    return normalize_activity(ACTIVITY, user_id="u1", updated_at=at(seconds))


def test_older_title_after_newer_type_is_applied() -> None:
    """A title change older than a type change already applied still lands; both stay."""
    workout = apply_update(fetched(), {"type": "Hike"}, at(200))
    workout = apply_update(workout, {"title": "Renamed"}, at(100))
    assert (workout.name, workout.sport_type) == ("Renamed", "Hike")
    assert workout.raw is not None
    assert (workout.raw["name"], workout.raw["sport_type"]) == ("Renamed", "Hike")
    assert workout.updated_at == at(200)  # the row time never moves back


def test_older_title_after_newer_title_is_ignored() -> None:
    """A title change older than the title already applied changes nothing."""
    workout = apply_update(fetched(), {"title": "Newer"}, at(200))
    assert apply_update(workout, {"title": "Older"}, at(100)) is workout


def test_each_field_keeps_its_own_time() -> None:
    """One event naming two fields applies only the one it is newer for."""
    workout = apply_update(fetched(), {"title": "Newer"}, at(200))
    workout = apply_update(workout, {"title": "Older", "private": "true"}, at(100))
    assert (workout.name, workout.is_private) == ("Newer", True)
    workout = apply_update(workout, {"private": "false"}, at(50))
    assert workout.is_private is True


def test_update_older_than_delete_does_not_resurrect() -> None:
    """After a delete, an older update neither undeletes the row nor changes its fields."""
    deleted = soft_delete(fetched(), at(300))
    after = apply_update(deleted, {"title": "Renamed", "private": "true"}, at(100))
    assert after.is_deleted
    assert (after.name, after.is_private) == ("Morning Run", False)


def test_delete_moves_no_field_time() -> None:
    """A delete newer than the row keeps each field's own last-change time."""
    deleted = soft_delete(apply_update(fetched(), {"type": "Hike"}, at(200)), at(300))
    assert (deleted.is_deleted, deleted.updated_at) == (True, at(300))
    assert deleted.field_updated_at == {"name": at(0), "sport_type": at(200), "is_private": at(0)}


def test_fetch_resets_every_field_time() -> None:
    """A fresh fetch stands for every field as of the fetch: older updates lose to it."""
    workout = apply_update(fetched(), {"title": "Renamed"}, at(100))
    refetched = normalize_activity(ACTIVITY, user_id="u1", updated_at=at(300))
    assert refetched.field_updated_at == {}
    for updates in ({"title": "Late"}, {"type": "Walk"}, {"private": "true"}):
        assert apply_update(refetched, updates, at(200)) is refetched
    # Without the refetch the type (as of the first fetch, at 0) takes a change at 50.
    assert apply_update(workout, {"type": "Walk"}, at(50)).sport_type == "Walk"
