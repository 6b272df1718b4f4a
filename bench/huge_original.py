"""Peak memory of downloading an ORIGINAL far over the size limit.

Serves a 1 GiB ORIGINAL from the Garmin emulator (made up while it is sent, with and
without Content-Length) and downloads it through GarminConnectAdapter, which must stop
at the limit (64 MiB). Prints, for each case, the bytes the emulator managed to send,
the time, and this process's peak RSS before and after; exits 1 when the peak grew by
more than the limit plus 32 MiB, or the download was not stopped.

    .venv/bin/python bench/huge_original.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from g2s_sandbox.garmin import GarminSandbox, make_record
from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.garmin import MAX_ORIGINAL_BYTES, GarminConnectAdapter
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.errors import ArchiveRejected

MiB = 1024 * 1024
USER = "bench"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    failures = 0
    with GarminSandbox() as garmin, tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(
            Path(tmp) / "bench.sqlite3", AesGcmCipher(parse_token_key(generate_token_key()))
        )
        store.replace_garmin_tokens(USER, garmin.issue_tokens(), expected_version=None)
        adapter = GarminConnectAdapter(
            store, USER, base_url=garmin.base_url, di_token_url=garmin.di_token_url
        )
        start = datetime(2025, 6, 2, tzinfo=UTC)
        for activity_id, declare in ((1, True), (2, False)):
            record = make_record(activity_id, "huge", "running", start, 1800, 5000.0)
            garmin.add_huge_original(record, args.size_mib * MiB, declare_length=declare)
            before = peak_rss_mib()
            began = time.perf_counter()
            try:
                adapter.download_original(activity_id)
                outcome = "downloaded (NOT stopped)"
                failures += 1
            except ArchiveRejected as exc:
                outcome = f"stopped: {exc}"
            seconds = time.perf_counter() - began
            after = peak_rss_mib()
            sent = garmin.huge_bytes_sent(activity_id) / MiB
            label = "Content-Length" if declare else "no Content-Length"
            print(
                f"{args.size_mib} MiB ORIGINAL, {label}: {outcome}; emulator sent {sent:.1f} MiB "
                f"in {seconds:.2f} s; peak RSS {before:.0f} -> {after:.0f} MiB"
            )
            if after - before > MAX_ORIGINAL_BYTES / MiB + 32:
                failures += 1
        store.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
