"""OriginalFiles: what goes to Strava is the checked file, gzipped when it is large."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

from g2s_sandbox.fitgen import build_activity_fit, build_gpx, zip_original
from garmin2strava.adapters.fitfile import OriginalFiles

START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)


def test_a_small_file_is_uploaded_as_it_is(tmp_path: Path) -> None:
    """A FIT under the threshold keeps its bytes and its data_type."""
    fit = build_activity_fit(start_utc=START, duration_s=600)
    prepared = OriginalFiles().prepare(zip_original(1, fit), tmp_path)
    assert prepared.data_type == "fit"
    assert prepared.path.read_bytes() == fit
    assert prepared.start_utc == START


def test_a_large_file_is_gzipped_and_inflates_to_the_same_bytes(tmp_path: Path) -> None:
    """Over the threshold the upload is `gpx.gz` whose content is the GPX byte for byte,
    and the uncompressed copy is gone from the work directory."""
    gpx = build_gpx(start_utc=START, duration_s=3600, name="Long")
    files = OriginalFiles(gzip_above_bytes=len(gpx) - 1)
    prepared = files.prepare(zip_original(1, gpx, member_name="1.gpx"), tmp_path)
    assert prepared.data_type == "gpx.gz"
    assert prepared.path.suffix == ".gz"
    assert gzip.decompress(prepared.path.read_bytes()) == gpx
    assert [p.name for p in tmp_path.iterdir()] == [prepared.path.name]
