"""Streams, large raw activities and paged workout reads, in every ports.Store
(SQLite and DynamoDB on moto, see conftest STORE_FACTORIES)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from g2s_sandbox.strava_records import SandboxActivity
from g2s_sandbox.strava_streams import activity_streams
from garmin2strava.domain.models import Workout
from garmin2strava.domain.streams import STREAM_TYPES, ActivityStreams, PendingStreams
from garmin2strava.ports import Store

pytestmark = pytest.mark.integration

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
DYNAMODB_ITEM_LIMIT = 400 * 1024


def _workout(
    activity_id: int,
    *,
    start: datetime = T0,
    raw: dict[str, Any] | None = None,
    deleted: bool = False,
    updated_at: datetime = T0,
) -> Workout:
    return Workout(
        user_id="u1",
        activity_id=activity_id,
        athlete_id=42,
        name="Long Ride",
        sport_type="Ride",
        start_utc=start,
        elapsed_time=21600,
        moving_time=21000,
        distance=180_000.0,
        total_elevation_gain=1200.0,
        external_id=f"garmin2strava-{activity_id}",
        upload_id=77,
        is_private=False,
        is_deleted=deleted,
        updated_at=updated_at,
        raw=raw if raw is not None else {"id": activity_id},
    )


def six_hour_ride_streams() -> dict[str, dict[str, Any]]:
    """The emulator's answer for a 6-hour ride at one sample a second, every type."""
    ride = SandboxActivity(9_000_001, 42, "Long Ride", "Ride", T0, 6 * 3600, 180_000.0)
    status, body = activity_streams(ride, ",".join(STREAM_TYPES), key_by_type=True)
    assert status == 200
    assert isinstance(body, dict)
    return body


def test_six_hour_ride_streams_read_back_equal(store: Store) -> None:
    """A 6-hour ride's eight streams (1.4 MB of JSON, past one DynamoDB item even
    compressed) are stored and read back exactly."""
    streams = six_hour_ride_streams()
    assert len(json.dumps(streams)) > 3 * DYNAMODB_ITEM_LIMIT
    assert sorted(streams) == sorted(STREAM_TYPES)
    assert len(streams["time"]["data"]) == 6 * 3600 + 1
    kept = ActivityStreams("u1", 9_000_001, fetched_at=T0, streams=streams)
    store.put_streams(kept)
    assert store.get_streams("u1", 9_000_001) == kept
    assert store.get_streams("u1", 9_000_00) is None  # a prefix of the id is another activity
    assert store.get_streams("u2", 9_000_001) is None


def test_no_streams_is_recorded_and_clears_the_pending_mark(store: Store) -> None:
    """An activity Strava has no streams for is kept as fetched-with-none; pending marks
    list in id order, go when the streams are stored, and never come back after."""
    for activity_id in (30, 10, 20):
        store.mark_streams_pending("u1", activity_id)
    store.mark_streams_pending("u1", 10)  # twice: still one mark
    assert store.list_pending_streams("u1") == [10, 20, 30]
    assert store.list_pending_streams("u1", limit=2) == [10, 20]
    assert store.list_pending_streams("u2") == []

    store.put_streams(ActivityStreams("u1", 20, fetched_at=T0))
    got = store.get_streams("u1", 20)
    assert got is not None
    assert not got.found
    assert store.list_pending_streams("u1") == [10, 30]
    store.mark_streams_pending("u1", 20)  # read once: never pending again
    assert store.list_pending_streams("u1") == [10, 30]


def _noisy_raw(activity_id: int, size: int) -> dict[str, Any]:
    """A DetailedActivity-like object of about `size` bytes of JSON whose text does not
    compress well (as segment efforts with their ids and polylines do not)."""
    rng = random.Random(activity_id)  # noqa: S311 - test data, not secrets
    efforts: list[dict[str, Any]] = []
    total = 0
    while total < size:
        effort = {
            "id": rng.getrandbits(60),
            "name": f"Segment {len(efforts)}",
            "elapsed_time": rng.randint(30, 3000),
            "polyline": "".join(rng.choices("abcdefghijklmnop_~@?", k=400)),
        }
        efforts.append(effort)
        total += len(json.dumps(effort))
    return {"id": activity_id, "name": "Long Ride", "segment_efforts": efforts}


def test_failed_reads_are_counted_and_listed_once_due(store: Store) -> None:
    """A failed read's mark keeps its count and retry time; `due_at` lists only the
    marks whose time has come (and plain ones); a budget mark on top keeps the count;
    a failure mark for an activity already read is refused."""
    store.mark_streams_pending("u1", 10)
    store.mark_streams_failed("u1", 20, failures=3, retry_at=T0 + timedelta(minutes=20))
    store.mark_streams_failed("u1", 30, failures=1, retry_at=T0 + timedelta(minutes=5))
    assert store.get_pending_streams("u1", 10) == PendingStreams(10)
    assert store.get_pending_streams("u1", 20) == PendingStreams(
        20, failures=3, retry_at=T0 + timedelta(minutes=20)
    )
    assert store.get_pending_streams("u1", 40) is None
    assert store.list_pending_streams("u1") == [10, 20, 30]
    assert store.list_pending_streams("u1", due_at=T0) == [10]
    assert store.list_pending_streams("u1", due_at=T0 + timedelta(minutes=5)) == [10, 30]
    assert store.list_pending_streams("u1", due_at=T0 + timedelta(hours=1), limit=2) == [10, 20]
    assert store.list_pending_streams("u2", due_at=T0 + timedelta(hours=1)) == []
    store.mark_streams_pending("u1", 20)  # a budget deferral: the count stays
    assert store.get_pending_streams("u1", 20) == PendingStreams(
        20, failures=3, retry_at=T0 + timedelta(minutes=20)
    )
    store.mark_streams_failed("u1", 20, failures=4, retry_at=T0 + timedelta(minutes=40))
    mark = store.get_pending_streams("u1", 20)
    assert mark is not None
    assert (mark.failures, mark.retry_at) == (4, T0 + timedelta(minutes=40))
    store.put_streams(ActivityStreams(user_id="u1", activity_id=50, fetched_at=T0))
    store.mark_streams_failed("u1", 50, failures=1, retry_at=T0)
    assert store.get_pending_streams("u1", 50) is None


def test_given_up_streams_keep_their_note_and_clear_the_mark(store: Store) -> None:
    """Streams kept as read with none and a note (the reads were given up) read back
    with the note; the pending mark is gone; a plain read has no note."""
    store.mark_streams_failed("u1", 60, failures=7, retry_at=T0)
    note = "gave up after 8 failed reads; the last: Strava answered 500"
    store.put_streams(ActivityStreams(user_id="u1", activity_id=60, fetched_at=T0, note=note))
    kept = store.get_streams("u1", 60)
    assert kept == ActivityStreams(user_id="u1", activity_id=60, fetched_at=T0, note=note)
    assert store.get_pending_streams("u1", 60) is None
    assert store.list_pending_streams("u1", due_at=T0 + timedelta(days=1)) == []
    store.put_streams(ActivityStreams(user_id="u1", activity_id=61, fetched_at=T0))
    plain = store.get_streams("u1", 61)
    assert plain is not None
    assert plain.note is None


@pytest.mark.parametrize("size", [500_000, 2_000_000])
def test_raw_activity_over_the_item_limit_is_stored(store: Store, size: int) -> None:
    """A raw activity over DynamoDB's 400 KB item limit (compressed into the item at
    500 KB, and split over part items at 2 MB) is written and read back whole, by
    get_workout and by the listings."""
    raw = _noisy_raw(7, size)
    assert len(json.dumps(raw)) > DYNAMODB_ITEM_LIMIT
    assert store.upsert_workout(_workout(7, raw=raw))
    got = store.get_workout("u1", 7)
    assert got is not None
    assert got.raw == raw
    (listed,) = store.list_workouts("u1")
    assert listed.raw == raw
    (iterated,) = store.iter_workouts("u1")
    assert iterated.raw == raw
    # Replaced by a smaller row: the small raw comes back, not the old parts.
    assert store.upsert_workout(_workout(7, raw={"id": 7}, updated_at=T0 + timedelta(hours=1)))
    again = store.get_workout("u1", 7)
    assert again is not None
    assert again.raw == {"id": 7}
    # An older write of the big raw loses, and leaves the newer row readable.
    assert not store.upsert_workout(_workout(7, raw=raw))
    kept = store.get_workout("u1", 7)
    assert kept is not None
    assert kept.raw == {"id": 7}


def test_realdata_detailed_activity_scaled_past_the_limit_is_stored(
    store: Store, realdata: Path
) -> None:
    """Strava's real marathon DetailedActivity, its laps and efforts repeated past
    400 KB (a long activity's detail), is stored and read back equal."""
    raw = json.loads((realdata / "strava" / "activity_1946417534.json").read_text())
    scaled = dict(raw)
    for key in ("segment_efforts", "laps", "splits_metric", "best_efforts"):
        if isinstance(raw.get(key), list) and raw[key]:
            scaled[key] = raw[key] * 8
    assert len(json.dumps(scaled)) > DYNAMODB_ITEM_LIMIT
    assert store.upsert_workout(_workout(int(raw["id"]), raw=scaled))
    got = store.get_workout("u1", int(raw["id"]))
    assert got is not None
    assert got.raw == scaled


def test_iter_workouts_pages_through_everything_oldest_first(store: Store) -> None:
    """iter_workouts yields every live workout from `since` on, oldest first, across
    pages (130 rows in pages of 50), without deleted ones."""
    for n in range(130):
        store.upsert_workout(_workout(n + 1, start=T0 + timedelta(hours=n), deleted=n % 100 == 5))
    live = list(store.iter_workouts("u1", page_size=50))
    assert len(live) == 130 - 2
    starts = [w.start_utc for w in live]
    assert starts == sorted(starts)
    with_deleted = list(store.iter_workouts("u1", include_deleted=True, page_size=50))
    assert len(with_deleted) == 130
    since = list(store.iter_workouts("u1", since=T0 + timedelta(hours=45), page_size=50))
    assert [w.activity_id for w in since] == [n + 1 for n in range(45, 130) if n % 100 != 5]
    assert list(store.iter_workouts("u2")) == []


def test_forgetting_an_account_deletes_its_streams_and_big_raws(store: Store) -> None:
    """A verified deauthorization's data deletion takes the streams, the pending marks
    and a split raw activity's parts with the workouts; another account keeps its own."""
    store.upsert_workout(_workout(7, raw=_noisy_raw(7, 2_000_000)))
    store.put_streams(ActivityStreams("u1", 7, fetched_at=T0, streams=six_hour_ride_streams()))
    store.mark_streams_pending("u1", 8)
    store.put_streams(ActivityStreams("u2", 7, fetched_at=T0))
    assert store.forget_strava_data("u1") > 0
    assert store.get_workout("u1", 7) is None
    assert store.get_streams("u1", 7) is None
    assert store.list_pending_streams("u1") == []
    assert store.get_streams("u2", 7) is not None
    store.upsert_workout(_workout(7, raw={"id": 7}))  # the id may be mirrored again
    again = store.get_workout("u1", 7)
    assert again is not None
    assert again.raw == {"id": 7}
