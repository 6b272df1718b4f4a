"""The user's own copy: the mirror as JSON Lines or CSV, streamed.

Rows come from `Store.iter_workouts` (a page of the store at a time) and go out one
line at a time, so memory stays flat whether the mirror holds ten activities or ten
years of them. With streams, each activity's streams are read when its turn comes
and dropped after: JSON Lines puts them in the activity's object, CSV writes one row
per sample (activity id, then one column per stream; `latlng` as `lat` and `lng`),
the shape a spreadsheet or a dashboard reads. `atomic_output` writes a file under a
temporary name and renames it when complete: an interrupted export never leaves a
half file where the last good one was.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from garmin2strava.domain.models import Workout
from garmin2strava.domain.streams import STREAM_TYPES
from garmin2strava.ports import Store

__all__ = [
    "CSV_COLUMNS",
    "ExportResult",
    "atomic_output",
    "export_workouts",
    "workout_record",
]

Format = Literal["jsonl", "csv"]

CSV_COLUMNS = (
    "activityId",
    "startDate",
    "name",
    "sportType",
    "elapsedTime",
    "movingTime",
    "distance",
    "totalElevationGain",
    "isPrivate",
    "isDeleted",
    "externalId",
    "uploadId",
    "updatedAt",
)


@dataclass(slots=True)
class ExportResult:
    activities: int = 0
    samples: int = 0  # stream points written (CSV rows, or points in JSON Lines)


def workout_record(workout: Workout) -> dict[str, Any]:
    """The exported fields of one activity (Strava's raw JSON stays in the store)."""
    return {
        "activityId": workout.activity_id,
        "athleteId": workout.athlete_id,
        "startDate": workout.start_utc.isoformat(),
        "name": workout.name,
        "sportType": workout.sport_type,
        "elapsedTime": workout.elapsed_time,
        "movingTime": workout.moving_time,
        "distance": workout.distance,
        "totalElevationGain": workout.total_elevation_gain,
        "isPrivate": workout.is_private,
        "isDeleted": workout.is_deleted,
        "externalId": workout.external_id,
        "uploadId": workout.upload_id,
        "updatedAt": workout.updated_at.isoformat(),
    }


def export_workouts(
    store: Store,
    user_id: str,
    out: TextIO,
    *,
    fmt: Format,
    since: datetime | None = None,
    streams: bool = False,
    include_deleted: bool = False,
) -> ExportResult:
    """Write the mirror of `user_id`, oldest first, to `out`."""
    rows = store.iter_workouts(user_id, since=since, include_deleted=include_deleted)
    if fmt == "jsonl":
        return _jsonl(store, rows, out, streams=streams)
    if streams:
        return _csv_samples(store, rows, out)
    return _csv(rows, out)


def _jsonl(store: Store, rows: Iterator[Workout], out: TextIO, *, streams: bool) -> ExportResult:
    result = ExportResult()
    for workout in rows:
        record = workout_record(workout)
        if streams:
            kept = store.get_streams(workout.user_id, workout.activity_id)
            record["streams"] = (
                {kind: s.get("data") for kind, s in kept.streams.items()} if kept else None
            )
            result.samples += kept.samples() if kept else 0
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        result.activities += 1
    return result


def _csv(rows: Iterator[Workout], out: TextIO) -> ExportResult:
    result = ExportResult()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for workout in rows:
        record = workout_record(workout)
        writer.writerow([_cell(record[column]) for column in CSV_COLUMNS])
        result.activities += 1
    return result


def _stream_columns(types: Sequence[str]) -> list[str]:
    columns = []
    for kind in types:
        columns.extend(["lat", "lng"] if kind == "latlng" else [kind])
    return columns


def _csv_samples(store: Store, rows: Iterator[Workout], out: TextIO) -> ExportResult:
    """One row per stream sample: activityId, startDate, then every stream type."""
    result = ExportResult()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["activityId", "startDate", *_stream_columns(STREAM_TYPES)])
    for workout in rows:
        result.activities += 1
        kept = store.get_streams(workout.user_id, workout.activity_id)
        if kept is None or not kept.found:
            continue
        data = {kind: kept.streams.get(kind, {}).get("data") or [] for kind in STREAM_TYPES}
        for n in range(kept.samples()):
            cells: list[str] = [str(workout.activity_id), workout.start_utc.isoformat()]
            for kind in STREAM_TYPES:
                value = data[kind][n] if n < len(data[kind]) else None
                if kind == "latlng":
                    lat, lng = value if isinstance(value, list) and len(value) == 2 else ("", "")  # noqa: PLR2004 - a pair
                    cells.extend([_cell(lat), _cell(lng)])
                else:
                    cells.append(_cell(value))
            writer.writerow(cells)
            result.samples += 1
    return result


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[TextIO]:
    """A text file at `path` that appears only complete: written beside it under a
    temporary name, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
