"""Peak memory of one sync cycle that uploads the largest ORIGINAL the limits admit.

The Garmin emulator serves one run whose ORIGINAL zip holds a GPX of tiny points (the
shape that cost the most memory: each point a few dozen bytes) of `--mib` MiB, just
under the 64 MiB archive limit by default; `--fit` uses a FIT file instead (one record
per second for a week, the longest a record may last). The cycle itself (download,
extract, check, upload, poll) runs in a child process that imports the whole daemon,
as `garmin2strava sync --once` does, and prints its own peak resident memory
(VmHWM), its memory after the imports, and the outcome. The goal is a peak under
200 MiB; the script exits 1 above it or when the run is not uploaded.

    .venv/bin/python bench/largest_original.py [--mib 60] [--fit]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.fitgen import build_activity_fit, zip_original
from g2s_sandbox.scenario import running_sandboxes, seed_run

MiB = 1024 * 1024
GOAL_MIB = 200
START = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)

CHILD = textwrap.dedent(
    """
    import json, sys

    def vm(name):
        for line in open("/proc/self/status"):
            if line.startswith(name):
                return int(line.split()[1]) // 1024
        return -1

    from garmin2strava.bootstrap import bootstrap
    from garmin2strava.services.accounts import ensure_settings_account
    from garmin2strava.services.sync_accounts import sync_all
    from garmin2strava.settings import load_settings
    import garmin2strava.adapters.garmin, garmin2strava.adapters.strava
    import garmin2strava.adapters.fitfile

    values = json.loads(sys.argv[1])
    settings = load_settings(env_file=None, **values)
    app = bootstrap(settings)
    app.poll_delay_s = 0.2
    ensure_settings_account(app.store, settings, app.clock)
    after_imports = vm("VmRSS")
    (report,) = sync_all(app.store, app.sync_deps)
    details = [detail for _, _, detail in report.actions]
    print(json.dumps({"after_imports": after_imports, "peak": vm("VmHWM"),
                      "outcomes": dict(report.outcomes), "error": report.error,
                      "details": details}))
    """
)


def gpx_of(size: int) -> bytes:
    """A GPX track of one-second points, `size` bytes or a little more."""
    head = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="bench" '
        b'xmlns="http://www.topografix.com/GPX/1/1"><trk><type>running</type><trkseg>\n'
    )
    tail = b"</trkseg></trk></gpx>\n"
    points: list[bytes] = []
    total = len(head) + len(tail)
    second = 0
    while total < size:
        when = (START + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lat = 46.0 + (second % 1000) * 1e-5
        point = f'<trkpt lat="{lat:.5f}" lon="14.50000"><time>{when}</time></trkpt>\n'.encode()
        points.append(point)
        total += len(point)
        second += 1
    return head + b"".join(points) + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=60.0, help="GPX size (default 60)")
    parser.add_argument("--fit", action="store_true", help="a week-long FIT file instead")
    args = parser.parse_args()
    if args.fit:
        duration = 7 * 24 * 3600 - 60
        payload = build_activity_fit(start_utc=START, duration_s=duration)
        member, kind = "1_ACTIVITY.fit", "FIT"
    else:
        payload = gpx_of(int(args.mib * MiB))
        duration = payload.count(b"<trkpt") - 1
        member, kind = "1.gpx", "GPX"
    original = zip_original(1, payload, member_name=member)
    print(
        f"{kind} of {len(payload) / MiB:.1f} MiB ({len(original) / MiB:.1f} MiB zipped), "
        f"{duration} s long"
    )
    with running_sandboxes() as pair, tempfile.TemporaryDirectory() as tmp:
        # Garmin's record lasts at most 6 days (a longer one is refused as implausible);
        # the file may hold more points than that: its check does not compare the two.
        record_s = min(duration, 6 * 24 * 3600)
        seed_run(pair, 1, start_utc=START, duration_s=record_s, original=original)
        settings = sandbox_settings(pair, Path(tmp) / "g2s.sqlite3", activity_types="*")
        values = {
            name: (value.get_secret_value() if isinstance(value, SecretStr) else value)
            for name in type(settings).model_fields
            if (value := getattr(settings, name)) is not None
        }
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
        done = subprocess.run(  # noqa: S603 - our interpreter, our script
            [sys.executable, "-c", CHILD, json.dumps(values, default=str)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            print(done.stderr[-2000:])
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"cycle: {result['outcomes']} {result['error']} {result['details']}; RSS after imports "
        f"{result['after_imports']} MiB, peak {result['peak']} MiB (goal < {GOAL_MIB} MiB)"
    )
    uploaded = result["outcomes"].get("uploaded", 0) == 1
    return 0 if uploaded and result["peak"] < GOAL_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
