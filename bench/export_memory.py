"""Peak memory of `workouts export` over a large mirror.

Seeds SQLite stores directly with 1,000 and 10,000 mirrored activities (each with a
raw JSON of about 2.5 KB, like Strava's SummaryActivity) and, for the streams case,
200 activities with an hour of streams each; then exports each one in a fresh child
process (`garmin2strava workouts export`'s service, to a file through atomic_output)
and prints the child's peak RSS before and after the export. Bounded memory means the
peak does not grow with the number of activities; the last row, for contrast, holds
every row in one list. Exits 1 when the 10,000-activity
export's growth is more than 2x the 1,000-activity one's plus 16 MiB.

    .venv/bin/python bench/export_memory.py [--activities 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from g2s_sandbox.strava_records import SandboxActivity
from g2s_sandbox.strava_streams import activity_streams
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Workout
from garmin2strava.domain.streams import ActivityStreams

USER = "bench"
KEY = bytes(range(32))
T0 = datetime(2015, 1, 1, 6, 0, tzinfo=UTC)
MiB = 1024 * 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _raw(n: int, rng: random.Random) -> dict[str, object]:
    return {
        "id": 10_000_000 + n,
        "name": f"Morning Run {n}",
        "sport_type": "Run",
        "map": {"summary_polyline": "".join(rng.choices("abcdefghijklmnop_~@?", k=2000))},
        "average_heartrate": rng.uniform(120, 160),
        "manual": False,
        "upload_id": 20_000_000 + n,
    }


def seed(path: Path, activities: int, *, streams: bool) -> None:
    rng = random.Random(activities)  # noqa: S311 - bench data, not secrets
    with SqliteStore(path, AesGcmCipher(KEY)) as store:
        for n in range(activities):
            activity_id = 10_000_000 + n
            start = T0 + timedelta(hours=9 * n)
            store.upsert_workout(
                Workout(
                    user_id=USER,
                    activity_id=activity_id,
                    athlete_id=42,
                    name=f"Morning Run {n}",
                    sport_type="Run",
                    start_utc=start,
                    elapsed_time=3600,
                    moving_time=3500,
                    distance=10_000.0 + n,
                    total_elevation_gain=80.0,
                    external_id=f"garmin2strava-{n}.fit",
                    upload_id=20_000_000 + n,
                    is_private=False,
                    is_deleted=False,
                    updated_at=start,
                    raw=_raw(n, rng),
                )
            )
            if streams:
                ride = SandboxActivity(activity_id, 42, "r", "Run", start, 3600, 10_000.0)
                _, body = activity_streams(ride, "time,heartrate,latlng", key_by_type=True)
                assert isinstance(body, dict)
                store.put_streams(
                    ActivityStreams(USER, activity_id, fetched_at=start, streams=body)
                )


def child(db: Path, fmt: str, streams: bool, out: Path) -> None:
    from garmin2strava.services.export import atomic_output, export_workouts

    with SqliteStore(db, AesGcmCipher(KEY)) as store:
        before = peak_rss_mib()
        started = time.perf_counter()
        if fmt == "list":  # for contrast: every row in one list, as a naive export would
            everything = list(store.iter_workouts(USER))
            count, samples = len(everything), 0
            out.write_text("")
        else:
            with atomic_output(out) as handle:
                result = export_workouts(store, USER, handle, fmt=fmt, streams=streams)  # type: ignore[arg-type]  # argparse gives a str
            count, samples = result.activities, result.samples
        elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "activities": count,
                "samples": samples,
                "before": before,
                "after": peak_rss_mib(),
                "seconds": elapsed,
                "bytes": out.stat().st_size,
            }
        )
    )


def measure(db: Path, fmt: str, *, streams: bool, out: Path) -> dict[str, float]:
    args = [sys.executable, __file__, "--child", str(db), fmt, "1" if streams else "0", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)  # noqa: S603 - our own script
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activities", type=int, default=10_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        db, fmt, streams, out = args.child
        child(Path(db), fmt, streams == "1", Path(out))
        return 0
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        small, large, with_streams = base / "small.db", base / "large.db", base / "streams.db"
        seed(small, args.activities // 10, streams=False)
        seed(large, args.activities, streams=False)
        seed(with_streams, 200, streams=True)
        for label, db, fmt, streams in (
            (f"{args.activities // 10} activities, jsonl", small, "jsonl", False),
            (f"{args.activities} activities, jsonl", large, "jsonl", False),
            (f"{args.activities // 10} activities, csv", small, "csv", False),
            (f"{args.activities} activities, csv", large, "csv", False),
            ("200 activities + 1 h streams, jsonl", with_streams, "jsonl", True),
            ("200 activities + 1 h streams, csv", with_streams, "csv", True),
            (f"contrast: {args.activities} rows in a list", large, "list", False),
        ):
            rows.append((label, measure(db, fmt, streams=streams, out=base / f"out.{fmt}")))
    print(f"{'export':<38} {'rows':>7} {'file MiB':>9} {'s':>6} {'RSS before':>11} {'peak':>7}")
    for label, f in rows:
        print(
            f"{label:<38} {int(f['activities']):>7} {f['bytes'] / MiB:>9.1f} {f['seconds']:>6.2f} "
            f"{f['before']:>9.1f} M {f['after']:>5.1f} M"
        )
    growth = {label: f["after"] - f["before"] for label, f in rows}
    small_growth, large_growth = growth[rows[0][0]], growth[rows[1][0]]
    bounded = large_growth <= 2 * small_growth + 16
    print(
        f"peak RSS growth: {small_growth:.1f} MiB for {args.activities // 10}, "
        f"{large_growth:.1f} MiB for {args.activities}: {'bounded' if bounded else 'NOT bounded'}"
    )
    return 0 if bounded else 1


if __name__ == "__main__":
    raise SystemExit(main())
