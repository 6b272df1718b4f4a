"""What checking a downloaded activity file costs: seconds per MiB, and peak memory.

    .venv/bin/python bench/file_check.py              (or `make bench-files`)
    .venv/bin/python bench/file_check.py --repeat 1   (one timing per file)

For every file of the real-recordings corpus (fit/, gpx/, tcx/ of ../shared/realdata,
or wherever G2S_REALDATA points) the file is first zipped as Garmin's ORIGINAL
download would hold it (`{id}_ACTIVITY.fit`, deflated); the real ORIGINAL zip of the
corpus (garmin/original_*.zip) is used as it is. Then `extract_original` followed by
`validate_activity_file` runs in a fresh directory, `--repeat` times, and the fastest
run is printed: file bytes, seconds, seconds per MiB and the outcome (the summary, or
the reason the file is refused). The largest files come first.

The goal is 0.25 s per MiB. For files under 64 KiB the fixed cost of unzipping
dominates, so a file meets the goal when its time is at most 0.25 s x max(size in
MiB, 1/16); the table marks the files that miss it and the script exits 1 if any does.

Then the peak resident memory of checking a generated GPX of tiny points (16 MiB and
60 MiB, zipped), each measured in a child process that does nothing else, next to the
same child's memory after its imports. Without the corpus the table is skipped with a
line saying so; the memory part needs no corpus.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from garmin2strava.adapters.fitfile import extract_original, validate_activity_file
from garmin2strava.errors import ArchiveRejected, FileRejected

MiB = 1024 * 1024
GOAL_S_PER_MIB = 0.25
SMALL_FILE_FLOOR_MIB = 1 / 16
_REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path | None:
    """The real-recordings folder, located as the tests' `realdata` fixture does."""
    configured = os.environ.get("G2S_REALDATA")
    candidate = Path(configured) if configured else _REPO.parent / "shared" / "realdata"
    return candidate if (candidate / "SOURCES.md").is_file() else None


def garmin_zip(activity_id: int, path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, f"{activity_id}_ACTIVITY{path.suffix.lower()}")
    return buf.getvalue()


def check_once(zipped: bytes) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="g2s-bench-") as tmp:
        began = time.perf_counter()
        try:
            extracted = extract_original(zipped, Path(tmp))
            summary = validate_activity_file(extracted)
        except (FileRejected, ArchiveRejected) as exc:
            return time.perf_counter() - began, f"refused: {exc}"
        seconds = time.perf_counter() - began
    start = summary.start_utc.isoformat() if summary.start_utc else "-"
    elapsed = f"{summary.elapsed_s:.0f} s" if summary.elapsed_s is not None else "-"
    distance = f"{summary.distance_m:.0f} m" if summary.distance_m is not None else "-"
    sport = "/".join(s for s in (summary.sport, summary.sub_sport) if s) or "-"
    return seconds, f"ok {start} {elapsed} {distance} {sport}"


def corpus_table(root: Path, repeat: int) -> bool:
    files = [p for kind in ("fit", "gpx", "tcx") for p in sorted((root / kind).glob(f"*.{kind}"))]
    cases: list[tuple[str, int, bytes]] = [
        (str(p.relative_to(root)), p.stat().st_size, garmin_zip(10_000 + i, p))
        for i, p in enumerate(files)
    ]
    for original in sorted((root / "garmin").glob("original_*.zip")):
        zipped = original.read_bytes()
        with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
            size = sum(info.file_size for info in archive.infolist())
        cases.append((str(original.relative_to(root)), size, zipped))
    cases.sort(key=lambda case: -case[1])
    print(f"{'file':58} {'bytes':>9} {'seconds':>8} {'s/MiB':>7}  outcome")
    all_met = True
    for name, size, zipped in cases:
        runs = [check_once(zipped) for _ in range(repeat)]
        seconds = min(run[0] for run in runs)
        outcome = runs[0][1]
        met = seconds <= GOAL_S_PER_MIB * max(size / MiB, SMALL_FILE_FLOOR_MIB)
        all_met = all_met and met
        mark = "" if met else "  <-- over the goal"
        print(f"{name:58} {size:9d} {seconds:8.4f} {seconds / (size / MiB):7.3f}  {outcome}{mark}")
    total_bytes = sum(case[1] for case in cases)
    print(f"{len(cases)} files, {total_bytes / MiB:.2f} MiB; goal {GOAL_S_PER_MIB} s/MiB: ", end="")
    print("met by every file" if all_met else "MISSED (marked above)")
    return all_met


def write_tiny_point_gpx(path: Path, size: int) -> None:
    start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write('<gpx version="1.1" creator="bench" xmlns="http://www.topografix.com/GPX/1/1">')
        out.write("<trk><type>running</type><trkseg>\n")
        i = 0
        while out.tell() < size:
            when = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            lat, lon = 45.0 + (i % 9973) * 1e-5, 13.0 + (i % 7919) * 1e-5
            out.write(f'<trkpt lat="{lat:.5f}" lon="{lon:.5f}"><time>{when}</time></trkpt>\n')
            i += 1
        out.write("</trkseg></trk></gpx>\n")


def peak_rss_kib() -> int:
    """This process's peak resident memory, KiB.

    Linux's VmHWM belongs to this program alone; `ru_maxrss` keeps the high-water mark
    of the parent that forked us, so it is only the fallback (in bytes on macOS)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def child_check(zip_path: Path) -> None:
    """Run in a child process: peak RSS (KiB) after imports, then after the check."""
    after_imports = peak_rss_kib()
    with tempfile.TemporaryDirectory(prefix="g2s-bench-") as tmp:
        try:
            summary = validate_activity_file(extract_original(zip_path.read_bytes(), Path(tmp)))
            outcome = f"ok {summary.records} points"
        except (FileRejected, ArchiveRejected) as exc:
            outcome = f"refused: {exc}"
    print(after_imports, peak_rss_kib(), outcome, sep="\t")


def memory_table() -> None:
    print(
        f"\n{'generated GPX':14} {'bytes':>10} {'RSS after imports':>18} {'peak RSS':>10}  outcome"
    )
    for mib in (16, 60):
        with tempfile.TemporaryDirectory(prefix="g2s-bench-") as tmp:
            gpx = Path(tmp) / "tiny.gpx"
            write_tiny_point_gpx(gpx, mib * MiB)
            zipped = Path(tmp) / "original.zip"
            with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(gpx, "1_ACTIVITY.gpx")
            size = gpx.stat().st_size
            gpx.unlink()
            result = subprocess.run(  # noqa: S603 - this interpreter, this script, our own path
                [sys.executable, __file__, "--child", str(zipped)],
                capture_output=True,
                text=True,
                check=True,
            )
        after_imports, peak, outcome = result.stdout.strip().split("\t", 2)
        print(
            f"{f'{mib} MiB':14} {size:10d} {int(after_imports) / 1024:15.0f} MiB "
            f"{int(peak) / 1024:6.0f} MiB  {outcome}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings per file (fastest kept)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_check(args.child)
        return 0
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus")
    root = corpus_dir()
    met = True
    if root is None:
        print("real recordings not found (../shared/realdata or G2S_REALDATA): corpus skipped")
    else:
        print(f"corpus: {root}")
        met = corpus_table(root, max(args.repeat, 1))
    memory_table()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
