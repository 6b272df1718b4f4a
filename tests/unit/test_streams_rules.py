"""The rules of streams: which types, which activities, the background reserve, and
how large values are compressed and split for the store."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters.store import blobs
from garmin2strava.domain.budget import RateBudget, next_day_reset, next_window_reset
from garmin2strava.domain.streams import (
    BACKGROUND_RESERVE,
    MAX_STREAM_FAILURES,
    STREAM_TYPES,
    has_recorded_file,
    parse_stream_types,
    stream_retry_at,
)

NOW = datetime(2025, 6, 1, 8, 7, tzinfo=UTC)


def test_stream_types_are_validated_deduplicated_and_ordered_as_given() -> None:
    """A comma list keeps known names once, in the given order; empty means none."""
    assert parse_stream_types(" Time, heartrate,,time ,latlng") == ("time", "heartrate", "latlng")
    assert parse_stream_types("") == ()
    assert parse_stream_types(list(STREAM_TYPES)) == STREAM_TYPES
    with pytest.raises(ValueError, match="unknown stream type\\(s\\) pulse, temp"):
        parse_stream_types("time,pulse,temp")


@pytest.mark.realdata
def test_only_activities_with_a_recorded_file_have_streams(realdata: Path) -> None:
    """Strava's real JSON: manual activities (manual: true) have none; device and app
    recordings (manual: false, with an upload) do."""
    strava = realdata / "strava"
    manual = ["create_activity_manual_2025.json", "stravalib_activity-manual.3.json"]
    recorded = ["activity_1946417534.json", "activity_7142833299.json", "stravalib_activity.3.json"]
    for name in manual:
        assert not has_recorded_file(json.loads((strava / name).read_text())), name
    for name in recorded:
        assert has_recorded_file(json.loads((strava / name).read_text())), name
    listed = json.loads((strava / "athlete_activities_2025.json").read_text())
    assert all(has_recorded_file(row) == (row["manual"] is False) for row in listed)


def _budget(read_short: int, read_daily: int = 0, short: int = 0) -> RateBudget:
    return RateBudget(
        read_short_usage=read_short,
        read_daily_usage=max(read_daily, read_short),
        short_usage=max(short, read_short),
        daily_usage=max(short, read_short, read_daily),
        observed_at=NOW,
    )


def test_background_reads_stop_at_the_uploaders_reserve() -> None:
    """With 100 reads a quarter hour, background reads go up to 80 and stop there,
    while ordinary reads (the uploader's) still have room until the last 5."""
    assert BACKGROUND_RESERVE == 0.2
    assert _budget(79).can_spend_background(1, NOW, reserve=BACKGROUND_RESERVE)
    assert not _budget(80).can_spend_background(1, NOW, reserve=BACKGROUND_RESERVE)
    assert _budget(80).can_spend(1, 0, NOW)  # the uploader's reads go on
    assert _budget(94).can_spend(1, 0, NOW)
    # The next window opens the background reads again.
    later = next_window_reset(NOW)
    assert _budget(80).can_spend_background(1, later, reserve=BACKGROUND_RESERVE)
    assert _budget(80).next_background_reset(NOW, reserve=BACKGROUND_RESERVE) == later


def test_background_reserve_covers_the_day_and_all_requests_too() -> None:
    """800 of the day's 1,000 reads spent: background waits for midnight; 160 of the
    quarter hour's 200 requests (uploads included) spent: for the next window."""
    day = _budget(0, read_daily=800)
    assert not day.can_spend_background(1, NOW, reserve=BACKGROUND_RESERVE)
    assert day.next_background_reset(NOW, reserve=BACKGROUND_RESERVE) == next_day_reset(NOW)
    uploads = _budget(0, short=160)
    assert not uploads.can_spend_background(1, NOW, reserve=BACKGROUND_RESERVE)
    assert uploads.can_spend(1, 0, NOW)


def test_background_waits_for_a_429_block() -> None:
    """After a 429, background reads wait for the block's end like every read."""
    blocked = RateBudget(blocked_until=NOW + timedelta(minutes=3))
    assert not blocked.can_spend_background(1, NOW, reserve=BACKGROUND_RESERVE)
    assert blocked.next_background_reset(NOW, reserve=BACKGROUND_RESERVE) == NOW + timedelta(
        minutes=3
    )


def test_pack_and_split_round_trip_below_the_part_size() -> None:
    """A value packed, cut in parts of at most N bytes and joined reads back equal."""
    value = {"data": [[47.1 + n / 1e5, 8.5 - n / 1e5] for n in range(20_000)]}
    blob = blobs.pack(value)
    assert len(blob) < len(json.dumps(value)) / 2  # compression pays
    parts = blobs.split(blob, 10_000)
    assert all(len(p) <= 10_000 for p in parts)
    assert len(parts) == -(-len(blob) // 10_000)
    joined = blobs.join_parts(parts, count=len(parts), expected_digest=blobs.digest(blob))
    assert blobs.unpack(joined) == value
    assert blobs.split(b"", 10) == [b""]


def test_missing_or_altered_parts_are_refused() -> None:
    """A lost part or a changed byte is an error, never a wrong value."""
    blob = blobs.pack({"x": os.urandom(64).hex()})
    parts = blobs.split(blob, 16)
    digest = blobs.digest(blob)
    with pytest.raises(blobs.BadBlob, match="expected"):
        blobs.join_parts(parts[:-1], count=len(parts), expected_digest=digest)
    altered = [parts[0][:-1] + bytes([parts[0][-1] ^ 1]), *parts[1:]]
    with pytest.raises(blobs.BadBlob, match="digest"):
        blobs.join_parts(altered, count=len(parts), expected_digest=digest)
    with pytest.raises(blobs.BadBlob, match="decompress"):
        blobs.unpack(b"not zlib")
    with pytest.raises(ValueError, match="positive"):
        blobs.split(blob, 0)


def test_failed_stream_reads_wait_longer_each_time_then_are_given_up() -> None:
    """After the 1st..7th failed read the next waits 5 min, doubling each time; the
    8th (MAX_STREAM_FAILURES) gives up (None); a count below 1 is a caller's error."""
    assert MAX_STREAM_FAILURES == 8
    waits = [stream_retry_at(n, now=NOW) for n in range(1, MAX_STREAM_FAILURES)]
    assert waits == [NOW + timedelta(minutes=m) for m in (5, 10, 20, 40, 80, 160, 320)]
    assert stream_retry_at(MAX_STREAM_FAILURES, now=NOW) is None
    assert stream_retry_at(MAX_STREAM_FAILURES + 5, now=NOW) is None
    with pytest.raises(ValueError, match="from 1"):
        stream_retry_at(0, now=NOW)
