"""The sandbox's own reading of uploaded files: what Strava accepts and how it refuses."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import fitdecode.utils
import pytest

from g2s_sandbox import fitgen
from g2s_sandbox.activity_files import (
    MALFORMED,
    NO_TIME,
    RefusedFile,
    read_activity,
)

START = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def run_fit() -> bytes:
    return fitgen.build_activity_fit(start_utc=START, duration_s=600, distance_m=2000.0)


def _refusal(data: bytes, data_type: str) -> RefusedFile:
    with pytest.raises(RefusedFile) as caught:
        read_activity(data, data_type)
    return caught.value


def test_fitgen_crc_is_the_fit_crc_fitdecode_computes() -> None:
    """fitgen's own CRC-16 equals fitdecode's on 3 KiB of every byte value."""
    payload = bytes(range(256)) * 12
    assert fitgen.fit_crc16(payload) == fitdecode.utils.compute_crc(payload)


def test_generated_fit_reads_back(run_fit: bytes) -> None:
    """A generated run reads back with its start, elapsed time, distance and sport."""
    reading = read_activity(run_fit, "fit")
    assert reading.start_utc == START
    assert reading.elapsed_s == 600.0
    assert reading.distance_m == pytest.approx(2000.0)
    assert (reading.sport, reading.sub_sport, reading.segments) == ("running", "generic", 1)


def test_chained_fit_is_one_activity_spanning_its_first_segment(run_fit: bytes) -> None:
    """A FIT chain (activity + appended segment) is accepted; the summary is the activity's."""
    later = fitgen.build_activity_fit(start_utc=START + timedelta(hours=2), duration_s=60)
    reading = read_activity(run_fit + later, "fit")
    assert reading.segments == 2
    assert reading.start_utc == START


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (fitgen.corrupt_crc, "CRC"),
        (lambda data: fitgen.truncate(data, len(data) // 2), "EOF"),
        (fitgen.wrong_header, "not a FIT file"),
        (lambda data: data + fitgen.corrupt_crc(data), "CRC"),  # a bad second segment
        (lambda data: data + b"\x0e\x20", "Header"),  # garbage after the chain
    ],
    ids=["file-crc", "truncated", "no-fit-tag", "bad-chained-segment", "trailing-bytes"],
)
def test_corrupt_fit_refused_as_malformed(run_fit: bytes, mangle: object, reason: str) -> None:
    """Every kind of damaged FIT file gets Strava's malformed wording and a reason."""
    assert callable(mangle)
    refused = _refusal(mangle(run_fit), "fit")
    assert refused.strava_error == MALFORMED
    assert reason in refused.reason


def test_gzip_upload_read_and_bad_gzip_refused(run_fit: bytes) -> None:
    """fit.gz is inflated first; a damaged gzip stream is refused as malformed."""
    assert read_activity(gzip.compress(run_fit), "fit.gz").start_utc == START
    assert _refusal(gzip.compress(run_fit)[:-9], "fit.gz").strava_error == MALFORMED


def test_gpx_and_tcx_read_with_times_in_utc() -> None:
    """GPX and TCX give the first time in UTC, elapsed from times or laps, TCX distance."""
    gpx = read_activity(fitgen.build_gpx(start_utc=START, duration_s=300), "gpx")
    assert (gpx.start_utc, gpx.elapsed_s, gpx.distance_m) == (START, 300.0, None)
    tcx = read_activity(fitgen.build_tcx(start_utc=START, duration_s=300), "tcx")
    assert (tcx.start_utc, tcx.elapsed_s, tcx.sport) == (START, 300.0, "running")
    assert tcx.distance_m == pytest.approx(1000.0)
    offset = b'<gpx><trk><trkseg><trkpt lat="1" lon="1"><time>2015-12-11T15:43:13.5+01:00'
    local = read_activity(offset + b"</time></trkpt></trkseg></trk></gpx>", "gpx")
    assert local.start_utc == datetime(2015, 12, 11, 14, 43, 13, 500_000, tzinfo=UTC)


_ROUTE = b'<gpx><rte><rtept lat="45.1" lon="13.7"/><rtept lat="45.2" lon="13.8"/></rte></gpx>'
_METADATA_ONLY = b"<gpx><metadata><time>2020-01-01T00:00:00Z</time></metadata><trk/></gpx>"
_TCX_NO_TIMES = (
    b"<TrainingCenterDatabase><Activities><Activity Sport='Running'><Lap>"
    b"<TotalTimeSeconds>60</TotalTimeSeconds></Lap></Activity></Activities>"
    b"</TrainingCenterDatabase>"
)


@pytest.mark.parametrize(
    ("data", "data_type"),
    [(_ROUTE, "gpx"), (_METADATA_ONLY, "gpx"), (_TCX_NO_TIMES, "tcx")],
    ids=["gpx-route-without-times", "gpx-only-metadata-time", "tcx-without-times"],
)
def test_files_without_time_refused_with_strava_wording(data: bytes, data_type: str) -> None:
    """A file Strava cannot place in time is refused with "Time information is missing"."""
    assert _refusal(data, data_type).strava_error == NO_TIME


def test_fit_without_absolute_timestamps_refused_as_untimed(run_fit: bytes) -> None:
    """A FIT file whose times are all device-relative (< 0x10000000) cannot be placed."""
    fit = fitgen.build_activity_fit(start_utc=fitgen.FIT_EPOCH + timedelta(days=30), duration_s=5)
    assert _refusal(fit, "fit").strava_error == NO_TIME


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>', "DOCTYPE"),
        (b"<gpx><trk>", "well-formed"),
        (b"<kml/>", "root element"),
        (b"", "empty"),
    ],
    ids=["entity", "unclosed", "wrong-root", "empty"],
)
def test_hostile_or_broken_xml_refused(data: bytes, reason: str) -> None:
    """DOCTYPE/entity declarations, broken XML, a foreign root and no bytes are refused."""
    refused = _refusal(data, "gpx")
    assert refused.strava_error == MALFORMED
    assert reason in refused.reason


def test_fit_that_is_not_an_activity_refused(run_fit: bytes) -> None:
    """A FIT file whose file_id type is not activity (a course here) is refused."""
    data = bytearray(run_fit)
    type_offset = 14 + 6 + 5 * 3 + 1  # header, definition header, 5 field definitions, rec hdr
    assert data[type_offset] == 4
    data[type_offset] = 6
    body = bytes(data[:-2])
    patched = body + fitgen.fit_crc16(body).to_bytes(2, "little")
    assert "not an activity" in _refusal(patched, "fit").reason


def test_missing_fitdecode_stops_with_one_line_naming_the_extra() -> None:
    """Without fitdecode, creating the Strava emulator exits with the install hint alone."""
    code = (
        "import sys; sys.modules['fitdecode'] = None\n"
        "from g2s_sandbox.strava import StravaSandbox\n"
        "StravaSandbox()\n"
    )
    done = subprocess.run(  # noqa: S603 - our interpreter, a fixed script
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    hint = (
        "the Strava sandbox reads uploads with fitdecode, which is not installed: "
        "pip install 'garmin2strava[sandbox]'"
    )
    assert done.stderr.strip().splitlines() == [hint]
