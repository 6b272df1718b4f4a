"""The activity-file check on real recordings (../shared/realdata, read in place).

fitparse's full decode of each FIT file is the oracle for session values: it is an
independent implementation of the FIT protocol, slow but thorough. Literal values were
checked by hand: the fenix 5 and Edge 820 starts against the FIT SDK's CSV dumps that
python-fitparse ships beside those files (first record times in PDT, UTC-7), the GPX
and TCX values against the files' own text.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fitparse import __version__ as fitparse_version
from fitparse.base import FitFileDecoder
from fitparse.processors import FitFileDataProcessor
from fitparse.records import DataMessage

from garmin2strava.adapters.fitfile import (
    FileSummary,
    extract_original,
    fit_crc16,
    summarize_upload,
    validate_activity_file,
)
from garmin2strava.errors import FileRejected

pytestmark = pytest.mark.realdata

# Every FIT file of the corpus, by what SOURCES.md says it is.
VALID = [
    "Activity.fit",
    "2013-02-06-12-11-14.fit",
    "2015-10-13-08-43-15.fit",
    "garmin-fenix-5-run.fit",
    "garmin-fenix-5-bike.fit",
    "garmin-fenix-5-walk.fit",
    "garmin-edge-820-bike.fit",
    "activity-small-fenix2-run.fit",
    "developer-types-sample.fit",
    "20170518-191602-1740899583.fit",
    "sample-activity-indoor-trainer.fit",
    "null_compressed_speed_dist.fit",
    "coros-pace-2-cycling-misaligned-fields.fit",
    "elemnt-bolt-no-application-id-inside-developer-data-id.fit",
    "2019-02-17-062644-ELEMNT-297E-195-0.fit",
    "activity-large-fenxi2-multisport.fit",
    "garmin-edge-500-activity.fit",
]
CHAINED = {
    "event_timestamp.fit": 5,
    "sample_mulitple_header.fit": 4,
    "garmin-fr935-cr.fit": 7,
    "activity-settings.fit": 2,
}
NO_ABSOLUTE_START = {
    "compressed-speed-distance.fit": "device-relative",
    "antfs-dump.63.fit": "device-relative",
    "DeveloperData.fit": "no timestamp at all",
}
NOT_ACTIVITIES = {
    "Settings.fit": "settings",
    "MonitoringFile.fit": "monitoring_b",
    "WorkoutIndividualSteps.fit": "workout",
    "WeightScaleSingleUser.fit": "weight",
}
CORRUPT = {
    "activity-filecrc.fit": r"^FIT file CRC mismatch$",
    "activity-unexpected-eof.fit": r"^FIT file truncated: 768 of 771 bytes$",
    "nick.fit": r"^FIT file CRC mismatch$",
    "strava-android-app-201.10-b1218918.fit": r"^FIT file truncated: 78233 of 78252 bytes$",
    "activity-activity-filecrc.fit": r"^chained FIT file 2 \(byte 771\): file CRC mismatch$",
    "activity-settings-corruptheader.fit": r"^chained FIT file 2 \(byte 771\): no \.FIT header$",
    "activity-settings-nodata.fit": r"^chained FIT file 2 \(byte 771\): file truncated",
}
WITH_SESSIONS = [*VALID, *CHAINED, "compressed-speed-distance.fit", "antfs-dump.63.fit"]


def _fit(realdata: Path, name: str) -> bytes:
    return (realdata / "fit" / name).read_bytes()


def _first_segment(data: bytes) -> bytes:
    header_size, data_size = data[0], int.from_bytes(data[4:8], "little")
    return data[: header_size + data_size + 2]


def _extract(data: bytes, workdir: Path, name: str = "11998957007_ACTIVITY.fit") -> Any:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return extract_original(buf.getvalue(), workdir)


# -- the oracle --------------------------------------------------------------------------


class _SessionOracle(FitFileDecoder):  # type: ignore[misc]  # fitparse ships no type information
    """fitparse's FitFile, its data processing (datetimes, units) kept to the session
    messages the oracle reads values from: every message is still decoded in full
    (fields, subfields, components, accumulated and compressed timestamps), but the
    records, which the oracle only counts, skip the processors that would convert their
    values (0.4 of fitparse's time on the large files)."""

    _processor = FitFileDataProcessor()

    def _parse_data_message(self, header: Any) -> DataMessage:
        message: DataMessage = super()._parse_data_message(header)
        if message.name == "session":  # as fitparse's DataProcessorMixin does for all
            for field_data in message.fields:
                self._processor.run_type_processor(field_data)
                self._processor.run_field_processor(field_data)
                self._processor.run_unit_processor(field_data)
            self._processor.run_message_processor(message)
        return message


def _fitparse_values(data: bytes) -> dict[str, Any]:
    """The summary rule of the module docstring, applied to fitparse's own decode (in
    JSON's types, for the cache below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # COROS: fitparse warns about mis-sized fields
        with _SessionOracle(io.BytesIO(_first_segment(data)), check_crc=True) as fit:
            messages = list(fit.get_messages(["session", "record"]))
    sessions = [m.get_values() for m in messages if m.name == "session"]
    assert sessions, "every file here has sessions"
    assert all("start_time" in s and "total_elapsed_time" in s for s in sessions)
    starts = [s["start_time"] for s in sessions]
    absolute = all(isinstance(t, datetime) for t in starts)
    if absolute:
        begin = min(t.replace(tzinfo=UTC) for t in starts)
        ends = [
            t.replace(tzinfo=UTC) + timedelta(seconds=s["total_elapsed_time"])
            for t, s in zip(starts, sessions, strict=True)
        ]
        elapsed = (max(ends) - begin).total_seconds()
    else:  # device-relative seconds: durations still hold
        elapsed = max(t + s["total_elapsed_time"] for t, s in zip(starts, sessions, strict=True))
        elapsed -= min(starts)
    distances = [s["total_distance"] for s in sessions if s.get("total_distance") is not None]
    sports = {s.get("sport") for s in sessions} - {None}
    sub_sports = {s.get("sub_sport") for s in sessions}
    return {
        "start_utc": begin.isoformat() if absolute else None,
        "elapsed_s": elapsed,
        "distance_m": sum(distances) if distances else None,
        "sport": "multisport" if len(sports) > 1 else next(iter(sports), None),
        "sub_sport": next(iter(sub_sports)) if len(sports) <= 1 and len(sub_sports) == 1 else None,
        "sessions": len(sessions),
        "records": sum(m.name == "record" for m in messages),
    }


def _expectation(values: dict[str, Any]) -> dict[str, Any]:
    """The oracle's values as the summary's: a datetime, floats compared approximately."""
    start, distance = values["start_utc"], values["distance_m"]
    return values | {
        "start_utc": None if start is None else datetime.fromisoformat(start),
        "elapsed_s": pytest.approx(values["elapsed_s"], abs=1e-3),
        "distance_m": None if distance is None else pytest.approx(distance),
    }


# What the oracle's answer depends on besides the file: fitparse and this module's code.
_ORACLE_INPUTS = fitparse_version.encode() + Path(__file__).read_bytes()


@pytest.fixture
def fitparse_expectation(pytestconfig: pytest.Config) -> Callable[[bytes], dict[str, Any]]:
    """`fitparse_expectation(data)`: the oracle's summary of a FIT file. Its values are kept
    in pytest's cache (.pytest_cache) under a hash of the file, fitparse's version and this
    module: fitparse's full decode takes seconds a file (most of `make unit`), and gives
    the same answer for the same bytes. The reader under test runs every time; a fresh
    clone, CI and `-p no:cacheprovider` decode every file."""
    cache = getattr(pytestconfig, "cache", None)

    def expect(data: bytes) -> dict[str, Any]:
        if cache is None:
            return _expectation(_fitparse_values(data))
        key = "g2s/fitparse/" + hashlib.sha256(_ORACLE_INPUTS + data).hexdigest()
        values = cache.get(key, None)
        if values is None:
            values = _fitparse_values(data)
            cache.set(key, values)
        return _expectation(values)

    return expect


@pytest.mark.slow  # fitparse decodes every message of every file
@pytest.mark.parametrize("name", WITH_SESSIONS)
def test_fit_summary_agrees_with_fitparse(
    realdata: Path, name: str, fitparse_expectation: Callable[[bytes], dict[str, Any]]
) -> None:
    """Start (UTC), elapsed, distance, sport, sessions and records match fitparse's decode."""
    summary = summarize_upload(_fit(realdata, name), "fit")
    expected = fitparse_expectation(_fit(realdata, name))
    got = {key: getattr(summary, key) for key in expected}
    assert got == expected
    if summary.start_utc is not None:
        assert summary.start_utc.tzinfo is UTC


@pytest.mark.parametrize(
    ("name", "start", "elapsed", "distance", "sport", "records"),
    [
        # FIT SDK CSV dumps: first record 07:34:09 / 09:09:22 / 07:32:51 / 09:10:15 PDT.
        ("garmin-fenix-5-run.fit", "2017-06-11T14:34:09", 56.887, 157.56, "running/generic", 21),
        ("garmin-fenix-5-bike.fit", "2017-06-12T16:09:22", 60.363, 459.52, "cycling/generic", 19),
        ("garmin-fenix-5-walk.fit", "2017-06-11T14:32:51", 45.379, 67.85, "walking/generic", 17),
        ("garmin-edge-820-bike.fit", "2017-06-12T16:10:15", 64.524, 457.12, "cycling/commuting",
         15),
        # 7 sessions, 08:00:01 to 13:11:37 + 3211 s = 14:05:08; distance the sum of all 7.
        ("activity-large-fenxi2-multisport.fit", "2015-08-29T08:00:01", 21907.0, 69831.36,
         "multisport", 24239),
        # 920XT triathlon: swim 07:33:01, ..., run 09:23:41 + 2850.694 s.
        ("sample_mulitple_header.fit", "2018-05-27T07:33:01", 9490.694, 52533.68, "multisport",
         1773),
        ("event_timestamp.fit", "2017-06-13T13:42:30", 4567.485, 2606.04,
         "swimming/lap_swimming", 4376),
    ],
)  # fmt: skip
def test_fit_literal_expectations(  # noqa: PLR0917 - one argument per column of the table
    realdata: Path, name: str, start: str, elapsed: float, distance: float, sport: str, records: int
) -> None:
    """Hand-checked starts (UTC), durations, distances and sports of real FIT files."""
    summary = summarize_upload(_fit(realdata, name), "fit")
    assert summary.start_utc == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert summary.elapsed_s == pytest.approx(elapsed, abs=1e-3)
    assert summary.distance_m == pytest.approx(distance)
    assert "/".join(s for s in (summary.sport, summary.sub_sport) if s) == sport
    assert summary.records == records


def test_multisport_file_has_seven_sessions(realdata: Path) -> None:
    """The fenix 2 multisport file is read as one activity of its 7 sessions."""
    summary = summarize_upload(_fit(realdata, "activity-large-fenxi2-multisport.fit"), "fit")
    assert (summary.sessions, summary.sport, summary.sub_sport) == (7, "multisport", None)


# -- chains ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "segments"), list(CHAINED.items()))
def test_chained_fit_accepted_unchanged(
    realdata: Path, tmp_path: Path, name: str, segments: int
) -> None:
    """A chained FIT file validates, its summary is its activity's, its bytes are untouched."""
    data = _fit(realdata, name)
    activity = _extract(data, tmp_path)
    summary = validate_activity_file(activity)
    assert summary.segments == segments
    assert activity.path.read_bytes() == data
    alone = summarize_upload(_first_segment(data), "fit")
    assert (summary.start_utc, summary.elapsed_s, summary.distance_m, summary.records) == (
        alone.start_utc,
        alone.elapsed_s,
        alone.distance_m,
        alone.records,
    )
    assert alone.segments == 1


def test_chain_with_a_bad_second_crc_is_refused_even_though_the_first_is_good(
    realdata: Path,
) -> None:
    """activity-activity-filecrc.fit: the first file alone validates, the chain does not."""
    data = _fit(realdata, "activity-activity-filecrc.fit")
    assert summarize_upload(_first_segment(data), "fit").sport == "running"
    with pytest.raises(FileRejected, match="chained FIT file 2"):
        summarize_upload(data, "fit")


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason"), list(CORRUPT.items()))
def test_corrupt_fit_refused_with_reason(
    realdata: Path, tmp_path: Path, name: str, reason: str
) -> None:
    """Each corrupt file of the corpus is refused before upload, naming its defect."""
    activity = _extract(_fit(realdata, name), tmp_path)
    with pytest.raises(FileRejected, match=reason):
        validate_activity_file(activity)


def test_unterminated_file_refused_even_with_a_good_crc(realdata: Path) -> None:
    """nick.fit with its CRC made right is still refused: its last message runs past the data."""
    body = _fit(realdata, "nick.fit")[:-2]
    repaired = body + fit_crc16(body).to_bytes(2, "little")
    with pytest.raises(FileRejected, match="runs past the end of the data"):
        summarize_upload(repaired, "fit")


@pytest.mark.parametrize(("name", "file_type"), list(NOT_ACTIVITIES.items()))
def test_not_an_activity_refused_naming_its_type(realdata: Path, name: str, file_type: str) -> None:
    """Settings, monitoring, workout and weight files are refused with their type."""
    with pytest.raises(FileRejected, match=f"not an activity \\(type '{file_type}'\\)"):
        summarize_upload(_fit(realdata, name), "fit")


@pytest.mark.parametrize(("name", "why"), list(NO_ABSOLUTE_START.items()))
def test_fit_without_absolute_time_read_then_refused_before_upload(
    realdata: Path, tmp_path: Path, name: str, why: str
) -> None:
    """No absolute timestamp: summarize_upload says so, validate_activity_file refuses."""
    summary = summarize_upload(_fit(realdata, name), "fit")
    assert summary.start_utc is None
    assert summary.no_start_reason is not None
    assert why in summary.no_start_reason
    with pytest.raises(FileRejected, match="Strava cannot place it in time"):
        validate_activity_file(_extract(_fit(realdata, name), tmp_path))


def test_every_corpus_fit_file_is_classified(realdata: Path) -> None:
    """No FIT file of the corpus escapes these tests' lists."""
    listed = {*VALID, *CHAINED, *NO_ABSOLUTE_START, *NOT_ACTIVITIES, *CORRUPT}
    assert {p.name for p in (realdata / "fit").glob("*.fit")} == listed


# -- the real ORIGINAL zip ---------------------------------------------------------------


def test_real_original_zip_extracts_and_validates(
    realdata: Path, tmp_path: Path, fitparse_expectation: Callable[[bytes], dict[str, Any]]
) -> None:
    """Garmin's own ORIGINAL download (fenix 6X yoga) extracts and reads as fitparse reads it."""
    activity = extract_original(
        (realdata / "garmin" / "original_11998957007.zip").read_bytes(), tmp_path
    )
    with zipfile.ZipFile(realdata / "garmin" / "original_11998957007.zip") as archive:
        assert activity.path.read_bytes() == archive.read("11998957007_ACTIVITY.fit")
    summary = validate_activity_file(activity)
    expected = fitparse_expectation(activity.path.read_bytes())
    assert {key: getattr(summary, key) for key in expected} == expected
    assert (summary.sport, summary.sub_sport) == ("training", "yoga")
    assert summary.start_utc == datetime(2023, 9, 11, 13, 44, 29, tzinfo=UTC)


# -- GPX and TCX -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "start", "elapsed", "distance", "sport", "records"),
    [
        # +01:00 and milliseconds: 15:43:13.000+01:00 to 15:43:13.994+01:00.
        ("gpx/track-with-less-sec-time.gpx", "2015-12-11T14:43:13", 0.994, None, "run", 2),
        ("gpx/around-visnjan-with-car.gpx", "2020-12-18T06:15:50", 514.0, None, None, 104),
        # GPX 1.0, the first of 8 tracks empty: 14:23:59Z to 16:23:49Z.
        ("gpx/cerknicko-jezero.gpx", "2010-08-05T14:23:59", 7190.0, None, None, 296),
        # UTF-8 BOM, -04:00: one lap of 976 s, last trackpoint 20:30:46-04:00.
        ("tcx/17611540601.tcx", "2022-12-05T00:14:28", 978.0, 2998.98, "running", 200),
        # SUP, two laps: 16:24:33Z + 145.539 s ends it; 1000.0 + 157.51 m.
        ("tcx/sup_activity_1.tcx", "2022-07-16T16:08:25", 1113.539, 1157.51, "other", 111),
    ],
)  # fmt: skip
def test_xml_files_read_correctly(  # noqa: PLR0917 - one argument per column of the table
    realdata: Path,
    tmp_path: Path,
    path: str,
    start: str,
    elapsed: float,
    distance: float | None,
    sport: str | None,
    records: int,
) -> None:
    """Real GPX and TCX files give their UTC start, elapsed time, distance and sport."""
    source = realdata / path
    activity = _extract(source.read_bytes(), tmp_path, f"1_ACTIVITY{source.suffix}")
    summary = validate_activity_file(activity)
    assert summary.start_utc == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert summary.elapsed_s == pytest.approx(elapsed, abs=1e-3)
    assert summary.distance_m == (None if distance is None else pytest.approx(distance))
    assert (summary.sport, summary.records) == (sport, records)
    assert summary == summarize_upload(source.read_bytes(), source.suffix[1:])


def _untimed(gpx: bytes) -> bytes:
    # Drop the times of the points only: the metadata time stays, as in a route export.
    return re.sub(rb"(<trkpt[^>]*>(?:(?!</trkpt>).)*?)<time>[^<]*</time>", rb"\1", gpx)


def test_gpx_track_without_point_times_is_refused_before_upload(
    realdata: Path, tmp_path: Path
) -> None:
    """A real track stripped of its point times (metadata time kept) cannot be placed."""
    gpx = _untimed((realdata / "gpx" / "around-visnjan-with-car.gpx").read_bytes())
    assert b"<metadata>" in gpx
    assert gpx.count(b"<time>") == 1
    summary = summarize_upload(gpx, "gpx")
    assert (summary.start_utc, summary.records) == (None, 104)
    with pytest.raises(FileRejected, match="Strava cannot place it in time"):
        validate_activity_file(_extract(gpx, tmp_path, "1_ACTIVITY.gpx"))


def test_gpx_route_without_times_is_refused_before_upload(realdata: Path, tmp_path: Path) -> None:
    """The same points as a route (rte/rtept, no times) are refused with that reason."""
    gpx = _untimed((realdata / "gpx" / "around-visnjan-with-car.gpx").read_bytes())
    route = gpx.replace(b"trkpt", b"rtept").replace(b"<trkseg>", b"").replace(b"</trkseg>", b"")
    route = route.replace(b"<trk>", b"<rte>").replace(b"</trk>", b"</rte>")
    summary = summarize_upload(route, "gpx")
    assert (summary.start_utc, summary.records) == (None, 104)
    assert summary.no_start_reason is not None
    assert "route" in summary.no_start_reason
    with pytest.raises(FileRejected, match="cannot place it in time"):
        validate_activity_file(_extract(route, tmp_path, "1_ACTIVITY.gpx"))


def test_real_gpx_in_utf16_is_refused(realdata: Path) -> None:
    """A real GPX re-encoded as UTF-16 is refused as not UTF-8."""
    text = (realdata / "gpx" / "track-with-less-sec-time.gpx").read_text(encoding="utf-8")
    with pytest.raises(FileRejected, match="not UTF-8"):
        summarize_upload(text.replace("utf-8", "utf-16").encode("utf-16"), "gpx")


# -- nothing but FileRejected escapes ----------------------------------------------------


def _reframe(body: bytes) -> bytes:
    """`body` (header + messages, no CRC) with its data size and both CRCs made right."""
    header_size = body[0]
    head = bytearray(body[:header_size])
    head[4:8] = (len(body) - header_size).to_bytes(4, "little")
    if header_size == 14:
        head[12:14] = fit_crc16(bytes(head[:12])).to_bytes(2, "little")
    framed = bytes(head) + body[header_size:]
    return framed + fit_crc16(framed).to_bytes(2, "little")


def _outcome(data: bytes, data_type: str) -> FileSummary | FileRejected:
    try:
        return summarize_upload(data, data_type)
    except FileRejected as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: report any other exception
        pytest.fail(f"{type(exc).__name__} escaped: {exc}")


def _fit_mutants(data: bytes, rng: random.Random) -> list[bytes]:
    segment = _first_segment(data)
    body, rest, header_size = segment[:-2], data[len(segment) :], segment[0]
    step = max(1, (len(body) - header_size) // 150)
    cuts = [_reframe(body[:cut]) + rest for cut in range(header_size, len(body), step)]
    flips = []
    for _ in range(300):
        at = rng.randrange(header_size, len(body))
        flipped = body[:at] + bytes([body[at] ^ rng.randrange(1, 256)]) + body[at + 1 :]
        flips.append(_reframe(flipped) + rest)
    raw = [data[: rng.randrange(len(data))] for _ in range(30)]
    raw += [data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :] for at in range(14)]
    return cuts + flips + raw


@pytest.mark.parametrize(
    "name",
    [
        "Activity.fit",
        "garmin-fenix-5-run.fit",
        "elemnt-bolt-no-application-id-inside-developer-data-id.fit",
        "activity-settings.fit",
    ],
)
def test_mutated_fit_gives_a_summary_or_file_rejected(realdata: Path, name: str) -> None:
    """Truncated and bit-flipped copies (CRCs recomputed) never raise anything but FileRejected."""
    rng = random.Random(name)  # noqa: S311 - seeded: the same cases every run
    outcomes = [_outcome(m, "fit") for m in _fit_mutants(_fit(realdata, name), rng)]
    reasons = [str(o) for o in outcomes if isinstance(o, FileRejected)]
    # The mutants reach the message walker, not only the CRC check, and some still read.
    assert any(reason.startswith("FIT data is damaged") for reason in reasons)
    assert any(isinstance(o, FileSummary) for o in outcomes)


def _xml_mutants(data: bytes, rng: random.Random) -> Iterator[bytes]:
    yield from (data[:cut] for cut in range(0, len(data), max(1, len(data) // 100)))
    for _ in range(200):
        at = rng.randrange(len(data))
        yield data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("path", "data_type"),
    [
        ("tcx/sup_activity_1.tcx", "tcx"),
        ("gpx/around-visnjan-with-car.gpx", "gpx"),
        ("tcx/17611540601.tcx", "tcx"),
    ],
)
def test_mutated_xml_gives_a_summary_or_file_rejected(
    realdata: Path, path: str, data_type: str
) -> None:
    """Truncated and byte-flipped GPX/TCX never raise anything but FileRejected."""
    data = (realdata / path).read_bytes()
    rng = random.Random(path)  # noqa: S311 - seeded: the same cases every run
    outcomes = [_outcome(mutant, data_type) for mutant in _xml_mutants(data, rng)]
    assert any(isinstance(o, FileRejected) for o in outcomes)
    assert any(isinstance(o, FileSummary) for o in outcomes)
