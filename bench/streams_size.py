"""How big a long activity's streams are, and what the stores make of them.

A 6-hour ride at one sample a second, every stream G2S_MIRROR_STREAMS can name, as the
Strava emulator answers it: prints the JSON size, the zlib-compressed size, the
number of DynamoDB items it takes (parts of 350,000 bytes under the 400 KB item
limit), and the time to write and read it back through the SQLite store.

    .venv/bin/python bench/streams_size.py [--hours 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from g2s_sandbox.strava_records import SandboxActivity
from g2s_sandbox.strava_streams import activity_streams
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store import blobs
from garmin2strava.adapters.store.dynamodb_streams import PART_BYTES
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.streams import STREAM_TYPES, ActivityStreams

KiB = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0)
    args = parser.parse_args()
    seconds = int(args.hours * 3600)
    ride = SandboxActivity(1, 42, "Long Ride", "Ride", datetime.now(UTC), seconds, seconds * 8.3)
    _, body = activity_streams(ride, ",".join(STREAM_TYPES), key_by_type=True)
    assert isinstance(body, dict)
    text = json.dumps(body, separators=(",", ":"))
    started = time.perf_counter()
    packed = blobs.pack(body)
    pack_s = time.perf_counter() - started
    parts = len(blobs.split(packed, PART_BYTES))
    kept = ActivityStreams("bench", 1, fetched_at=datetime.now(UTC), streams=body)
    with (
        tempfile.TemporaryDirectory() as tmp,
        SqliteStore(Path(tmp) / "g2s.sqlite3", AesGcmCipher(bytes(range(32)))) as store,
    ):
        started = time.perf_counter()
        store.put_streams(kept)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        back = store.get_streams("bench", 1)
        read_s = time.perf_counter() - started
    assert back == kept
    print(f"{args.hours:g} h ride, {seconds + 1} samples x {len(body)} streams")
    print(
        f"JSON {len(text) / KiB:,.0f} KiB; zlib {len(packed) / KiB:,.0f} KiB "
        f"({len(text) / len(packed):.1f}x, {pack_s * 1000:.0f} ms)"
    )
    print(f"DynamoDB: {parts} item(s) of at most {PART_BYTES:,} bytes")
    print(f"SQLite: write {write_s * 1000:.0f} ms, read back {read_s * 1000:.0f} ms, equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
