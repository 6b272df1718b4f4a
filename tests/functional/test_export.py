"""`workouts export` as a use case, over the real SQLite store with a count of the rows
it has handed out: rows go out as they come in (no list of everything), in both
formats."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Workout
from garmin2strava.domain.streams import ActivityStreams
from garmin2strava.services.export import CSV_COLUMNS, atomic_output, export_workouts

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)


def workout(n: int) -> Workout:
    return Workout(
        user_id="u1",
        activity_id=100 + n,
        athlete_id=42,
        name=f'Run, "number" {n}',
        sport_type="Run",
        start_utc=T0 + timedelta(days=n),
        elapsed_time=1800,
        moving_time=1700,
        distance=5000.0 + n,
        total_elevation_gain=None,
        external_id=None,
        upload_id=9,
        is_private=n % 2 == 1,
        is_deleted=False,
        updated_at=T0,
        raw={"id": 100 + n},
    )


# The real store's paging, in pages this small: a few dozen rows cross several pages
# (the export's own 500 would need 500 rows written, one transaction each).
PAGE = 7


class CountingStore(SqliteStore):
    """The real store, counting the rows `iter_workouts` has handed out (`yielded`) and
    keeping the arguments it was asked with (`asked`); it reads `PAGE` rows a query."""

    yielded = 0
    asked: tuple[datetime | None, bool, int] | None = None

    def iter_workouts(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        include_deleted: bool = False,
        page_size: int = 500,
    ) -> Iterator[Workout]:
        self.asked = (since, include_deleted, page_size)
        for row in super().iter_workouts(
            user_id, since=since, include_deleted=include_deleted, page_size=PAGE
        ):
            self.yielded += 1
            yield row


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    with CountingStore(tmp_path / "store.sqlite3", AesGcmCipher(bytes(range(32)))) as opened:
        yield opened


def put_workouts(store: SqliteStore, count: int) -> None:
    for n in range(count):
        store.upsert_workout(workout(n))


class WatchingOutput(io.StringIO):
    """Records, for every line written, how many rows the store had handed out."""

    def __init__(self, store: CountingStore) -> None:
        super().__init__()
        self.store = store
        self.read_ahead: list[int] = []
        self.lines = 0

    def write(self, s: str) -> int:
        self.lines += s.count("\n")
        self.read_ahead.append(self.store.yielded - self.lines)
        return super().write(s)


def test_jsonl_goes_out_row_by_row(store: CountingStore) -> None:
    """Each activity is one JSON line, written before the next row is read from the
    store (over several of its pages): the export never holds more than one row."""
    put_workouts(store, 5 * PAGE + 3)
    out = WatchingOutput(store)
    result = export_workouts(store, "u1", out, fmt="jsonl", since=T0)
    assert result.activities == 5 * PAGE + 3
    assert store.asked == (T0, False, 500)
    assert max(out.read_ahead) <= 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["activityId"] for r in records] == [100 + n for n in range(5 * PAGE + 3)]
    assert records[1]["name"] == 'Run, "number" 1'
    assert records[1]["isPrivate"] is True
    assert "raw" not in records[0]


def test_csv_has_a_header_and_quotes_what_needs_it(store: CountingStore) -> None:
    """CSV: the header, then one row per activity; commas and quotes survive."""
    put_workouts(store, 3)
    out = WatchingOutput(store)
    export_workouts(store, "u1", out, fmt="csv")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 4
    by_name = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert by_name["name"] == 'Run, "number" 1'
    assert by_name["isPrivate"] == "true"
    assert by_name["totalElevationGain"] == ""
    assert max(out.read_ahead) <= 1  # the header line comes before the first row


def _streams(activity_id: int, points: int) -> ActivityStreams:
    def stream(data: list[Any]) -> dict[str, Any]:
        return {"data": data, "series_type": "distance", "original_size": points}

    return ActivityStreams(
        "u1",
        activity_id,
        fetched_at=T0,
        streams={
            "time": stream(list(range(points))),
            "latlng": stream([[47.0 + n / 1000, 8.0] for n in range(points)]),
            "heartrate": stream([130 + n for n in range(points)]),
        },
    )


def test_streams_go_into_jsonl_and_become_sample_rows_in_csv(store: CountingStore) -> None:
    """With streams, JSON Lines carries them (null where never read); CSV writes one
    row per sample with lat and lng apart, and none for activities without streams."""
    put_workouts(store, 3)
    store.put_streams(_streams(100, 4))
    store.put_streams(ActivityStreams("u1", 102, fetched_at=T0))  # Strava has none
    out = io.StringIO()
    result = export_workouts(store, "u1", out, fmt="jsonl", streams=True)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["streams"]["heartrate"] == [130, 131, 132, 133]
    assert records[1]["streams"] is None
    assert records[2]["streams"] == {}
    assert result.samples == 4

    out = io.StringIO()
    result = export_workouts(store, "u1", out, fmt="csv", streams=True)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert (result.activities, result.samples, len(rows)) == (3, 4, 4)
    assert {r["activityId"] for r in rows} == {"100"}
    assert (rows[2]["time"], rows[2]["lat"], rows[2]["lng"], rows[2]["heartrate"]) == (
        "2",
        "47.002",
        "8.0",
        "132",
    )
    assert rows[2]["watts"] == ""


def test_atomic_output_replaces_only_when_complete(tmp_path: Path) -> None:
    """A failed export leaves the previous file as it was and no temporary file."""
    target = tmp_path / "export.jsonl"
    target.write_text("the last good export\n")

    def fail_halfway() -> None:
        with atomic_output(target) as out:
            out.write("half an export")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_halfway()
    assert target.read_text() == "the last good export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["export.jsonl"]
    with atomic_output(target) as out:
        out.write("new\n")
    assert target.read_text() == "new\n"
