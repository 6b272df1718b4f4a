"""The FIT encoder against fitparse, and the file adapter against hostile input."""

from __future__ import annotations

import gzip
import io
import random
import struct
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
from fitparse import FitFile

from g2s_sandbox import fitgen
from garmin2strava.adapters.fitfile import (
    ActivityFile,
    FileSummary,
    extract_original,
    fit_crc16,
    summarize_upload,
    validate_activity_file,
)
from garmin2strava.errors import ArchiveRejected, FileRejected

START = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
ACTIVITY_ID = 18_345_678_901
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def hour_run() -> bytes:
    return fitgen.build_activity_fit(start_utc=START, duration_s=3600, distance_m=10_500.0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


# -- fitgen -----------------------------------------------------------------------------


def test_generated_fit_parses_with_fitparse_crc_checked(hour_run: bytes) -> None:
    """fitparse, checking both CRCs, reads the generated session and 3,601 records."""
    with FitFile(io.BytesIO(hour_run), check_crc=True) as fit:
        messages = list(fit.get_messages())
    names = [m.name for m in messages]
    assert names[0] == "file_id"
    assert names.count("record") == 3601
    session = next(m for m in messages if m.name == "session").get_values()
    assert session["sport"] == "running"
    assert session["start_time"] == START.replace(tzinfo=None)
    assert session["total_elapsed_time"] == 3600.0
    assert session["total_distance"] == 10_500.0
    record = next(m for m in messages if m.name == "record").get_values()
    assert {"position_lat", "position_long", "heart_rate", "speed", "altitude"} <= set(record)


def test_fitgen_crc_matches_fitparse_crc() -> None:
    """Our table CRC-16 equals fitparse's nibble implementation of the FIT CRC."""
    from fitparse.records import Crc

    payload = bytes(range(256)) * 3
    reference = Crc()
    reference.update(payload)
    assert fitgen.fit_crc16(payload) == reference.value


def test_hour_run_encodes_well_under_a_second() -> None:
    """A 3,600-record activity encodes in under half a second."""
    began = time.perf_counter()
    fitgen.build_activity_fit(start_utc=START, duration_s=3600)
    assert time.perf_counter() - began < 0.5


def test_treadmill_run_without_gps_round_trips() -> None:
    """Sport, sub-sport and the absence of positions survive encoding."""
    data = fitgen.build_activity_fit(
        start_utc=START, duration_s=600, sport="running", sub_sport="treadmill", with_gps=False
    )
    summary = summarize_upload(data, "fit")
    assert (summary.sport, summary.sub_sport) == ("running", "treadmill")
    with FitFile(io.BytesIO(data)) as fit:
        record = next(iter(fit.get_messages("record"))).get_values()
    assert "position_lat" not in record


@pytest.mark.parametrize(("sport", "sub_sport"), [(s, "generic") for s in fitgen.SPORTS])
def test_every_sport_name_matches_the_fit_profile(sport: str, sub_sport: str) -> None:
    """Each sport in fitgen's table decodes to the same name in fitparse's profile."""
    data = fitgen.build_activity_fit(start_utc=START, duration_s=5, sport=sport)
    assert summarize_upload(data, "fit").sport == sport


@pytest.mark.parametrize("sub_sport", list(fitgen.SUB_SPORTS))
def test_every_sub_sport_name_matches_the_fit_profile(sub_sport: str) -> None:
    """Each sub-sport in fitgen's table decodes to the same name in fitparse's profile."""
    data = fitgen.build_activity_fit(start_utc=START, duration_s=5, sub_sport=sub_sport)
    assert summarize_upload(data, "fit").sub_sport == sub_sport


# -- extract + validate: the good path ------------------------------------------------


def test_original_zip_extracts_and_validates(hour_run: bytes, workdir: Path) -> None:
    """A Garmin-shaped ORIGINAL zip yields a FIT file whose summary matches the run."""
    activity = extract_original(fitgen.zip_original(ACTIVITY_ID, hour_run), workdir)
    assert activity.data_type == "fit"
    assert activity.path.parent == workdir
    assert activity.path.read_bytes() == hour_run
    assert _tree(workdir) == {Path(activity.path.name)}
    summary = validate_activity_file(activity)
    assert summary.start_utc == START
    assert summary.start_utc.tzinfo is UTC
    assert summary.sport == "running"
    assert summary.elapsed_s == 3600.0
    assert summary.distance_m == 10_500.0
    assert summary.records == 3601


def test_member_name_is_not_used_for_the_written_file(workdir: Path) -> None:
    """A member named oddly (but safely) is written under our own name, extension by case."""
    data = fitgen.build_activity_fit(start_utc=START, duration_s=60)
    zipped = fitgen.zip_original(1, data, member_name="sub/dir/My Run.FIT")
    activity = extract_original(zipped, workdir)
    assert activity.data_type == "fit"
    assert activity.path == workdir / "activity.fit"


def test_gpx_member_accepted_as_gpx(workdir: Path) -> None:
    """An imported GPX activity comes out with data_type gpx and its first point's time."""
    gpx = fitgen.build_gpx(start_utc=START, duration_s=600)
    activity = extract_original(fitgen.zip_original(7, gpx, member_name="7.gpx"), workdir)
    assert activity.data_type == "gpx"
    summary = validate_activity_file(activity)
    assert summary.start_utc == START
    assert summary.elapsed_s == 600.0
    assert summary.records == 121


def test_tcx_summary(workdir: Path) -> None:
    """A TCX file yields its lap start, sport, time and distance."""
    tcx = fitgen.build_tcx(start_utc=START, duration_s=300)
    activity = extract_original(fitgen.zip_original(7, tcx, member_name="7.TCX"), workdir)
    summary = validate_activity_file(activity)
    assert (summary.data_type, summary.start_utc, summary.sport) == ("tcx", START, "running")
    assert summary.elapsed_s == 300.0
    assert summary.distance_m == 1000.0


def test_garmin_named_member_wins_among_several(workdir: Path) -> None:
    """With a GPX and `{id}_ACTIVITY.fit` in one zip, the FIT member is chosen."""
    fit = fitgen.build_activity_fit(start_utc=START, duration_s=60)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("track.gpx", fitgen.build_gpx(start_utc=START, duration_s=60))
        archive.writestr(f"{ACTIVITY_ID}_ACTIVITY.fit", fit)
    activity = extract_original(buf.getvalue(), workdir)
    assert activity.data_type == "fit"
    assert activity.path.read_bytes() == fit


def test_summarize_upload_reads_gzipped_fit(hour_run: bytes) -> None:
    """The Strava emulator can summarise a `fit.gz` upload from bytes."""
    summary = summarize_upload(gzip.compress(hour_run), "fit.gz")
    assert summary.start_utc == START


def test_validating_an_hour_is_fast(hour_run: bytes) -> None:
    """Checking and parsing a 1-hour FIT file stays under two seconds on a slow runner."""
    began = time.perf_counter()
    summarize_upload(hour_run, "fit")
    assert time.perf_counter() - began < 2.0


# -- hostile archives -----------------------------------------------------------------


def _fit() -> bytes:
    return fitgen.build_activity_fit(start_utc=START, duration_s=60)


HOSTILE_ZIPS: dict[str, tuple[Callable[[], bytes], str]] = {
    "traversal": (lambda: fitgen.zip_traversal(_fit()), "'..'"),
    "nested traversal": (
        lambda: fitgen.zip_traversal(_fit(), member_name="a/../../evil.fit"),
        "'..'",
    ),
    "absolute": (lambda: fitgen.zip_absolute_path(_fit()), "absolute path"),
    "drive letter": (
        lambda: fitgen.zip_absolute_path(_fit(), member_name="C:evil.fit"),
        "absolute path",
    ),
    "backslash": (
        lambda: fitgen.zip_traversal(_fit(), member_name="..\\evil.fit"),
        "plain relative path",
    ),
    "symlink": (lambda: fitgen.zip_symlink(ACTIVITY_ID), "symlink"),
    "too many members": (lambda: fitgen.zip_too_many_members(ACTIVITY_ID, _fit()), "members"),
    "bomb": (lambda: fitgen.zip_bomb(ACTIVITY_ID), "compression ratio"),
    "no activity": (lambda: fitgen.zip_no_activity(ACTIVITY_ID), "no .fit, .gpx or .tcx"),
    "not a zip": (fitgen.not_a_zip, "not a zip archive"),
    "two unnamed activities": (lambda: _two_members("a.fit", "b.gpx"), "refusing to guess"),
}


def _two_members(first: str, second: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(first, _fit())
        archive.writestr(second, _fit())
    return buf.getvalue()


@pytest.mark.parametrize("case", list(HOSTILE_ZIPS))
def test_hostile_zip_rejected_and_nothing_written(case: str, tmp_path: Path) -> None:
    """Each unsafe archive raises ArchiveRejected with its reason; no file appears anywhere."""
    workdir = tmp_path / "a" / "work"
    workdir.mkdir(parents=True)
    build, reason = HOSTILE_ZIPS[case]
    before = _tree(tmp_path)
    with pytest.raises(ArchiveRejected, match=reason):
        extract_original(build(), workdir)
    assert _tree(tmp_path) == before
    assert not (tmp_path / "a" / "evil.fit").exists()
    assert not (tmp_path / "evil.fit").exists()


def test_bomb_with_lying_sizes_stops_while_inflating(tmp_path: Path) -> None:
    """A bomb whose header declares a small size is cut off early, not inflated to 50 MB."""
    bomb = fitgen.zip_bomb(ACTIVITY_ID, size=50 * 1024 * 1024)
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        info = archive.infolist()[0]
    # Rewrite the declared sizes in the central directory, so only streaming can catch it.
    lied = _declare_size(bomb, info.file_size, 2 * info.compress_size)
    workdir = tmp_path / "work"
    workdir.mkdir()
    began = time.perf_counter()
    with pytest.raises(ArchiveRejected):
        extract_original(lied, workdir)
    assert time.perf_counter() - began < 0.2  # inflating 50 MB takes longer than this
    assert _tree(tmp_path) == {Path("work")}


def _declare_size(archive: bytes, real: int, claimed: int) -> bytes:
    # The central directory is what zipfile trusts: its uncompressed size sits at offset 24.
    central = archive.rindex(b"PK\x01\x02")
    field = slice(central + 24, central + 28)
    assert int.from_bytes(archive[field], "little") == real
    return archive[: field.start] + claimed.to_bytes(4, "little") + archive[field.stop :]


def test_bomb_over_total_limit_rejected_even_under_ratio(tmp_path: Path) -> None:
    """A lower byte budget refuses a member bigger than it from its declared size alone."""
    fit = _fit()
    with pytest.raises(ArchiveRejected, match="expands to"):
        extract_original(fitgen.zip_original(1, fit), tmp_path, max_total_bytes=len(fit) - 1)
    assert list(tmp_path.iterdir()) == []


# -- broken FIT files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (fitgen.corrupt_crc, "FIT file CRC mismatch"),
        (lambda b: fitgen.truncate(b, len(b) // 2), "FIT file truncated"),
        (lambda b: fitgen.truncate(b, 10), "not a FIT file"),
        (fitgen.wrong_header, "not a FIT file"),
        (lambda b: b[:12] + b"\x00\x01" + b[14:], "FIT header CRC mismatch"),
        (lambda b: b + b"\x00", "after its CRC"),
        (lambda b: b[:40] + bytes([b[40] ^ 0x10]) + b[41:], "FIT file CRC mismatch"),
    ],
    ids=["file-crc", "truncated", "tiny", "wrong-tag", "header-crc", "trailing", "bit-flip"],
)
def test_broken_fit_rejected_with_reason(
    mangle: Callable[[bytes], bytes], reason: str, hour_run: bytes, workdir: Path
) -> None:
    """Corrupt FIT files inside a valid zip are refused by validation, naming the defect."""
    activity = extract_original(fitgen.zip_original(1, mangle(hour_run)), workdir)
    with pytest.raises(FileRejected, match=reason):
        validate_activity_file(activity)


def test_fit_that_is_not_an_activity_rejected() -> None:
    """A FIT file whose file_id type is not activity (e.g. a course) is refused."""
    data = bytearray(fitgen.build_activity_fit(start_utc=START, duration_s=5))
    # file_id's first data byte (type) follows the 14-byte header and 21-byte definition.
    type_offset = 14 + 6 + 5 * 3 + 1
    assert data[type_offset] == 4
    data[type_offset] = 6  # course
    body = bytes(data[:-2])
    patched = body + fitgen.fit_crc16(body).to_bytes(2, "little")
    with pytest.raises(FileRejected, match="not an activity"):
        summarize_upload(patched, "fit")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>',
            "DOCTYPE or ENTITY",
        ),
        ("<gpx></gpx>".encode("utf-16"), "not UTF-8"),
        (b"<gpx><trk>", "not well-formed"),
        (b"<kml></kml>", "root element"),
        (b"<gpx><trk><trkseg><trkpt><time>yesterday</time></trkpt></trkseg></trk></gpx>", "time"),
    ],
    ids=["entity", "utf16", "malformed", "wrong-root", "bad-time"],
)
def test_hostile_gpx_rejected(payload: bytes, reason: str) -> None:
    """GPX with entity declarations, another encoding, bad XML or a bad time is refused."""
    with pytest.raises(FileRejected, match=reason):
        summarize_upload(payload, "gpx")


def test_unknown_data_type_rejected(tmp_path: Path) -> None:
    """A data type other than fit/gpx/tcx (optionally .gz) is refused."""
    path = tmp_path / "x.kml"
    path.write_bytes(b"<kml/>")
    with pytest.raises(FileRejected, match="unsupported data_type"):
        validate_activity_file(ActivityFile(path=path, data_type="kml"))


# -- CRC ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 1001, 32766, 32767, 32768, 65535, 65536, 100_003])
def test_crc_equals_fitparse_crc_at_every_length(length: int) -> None:
    """Our CRC (two bytes a step; folded past 32,767 bytes) equals fitparse's, from any start."""
    from fitparse.records import Crc

    payload = random.Random(length).randbytes(length)  # noqa: S311 - seeded: the same bytes every run
    reference = Crc()
    reference.update(payload)
    assert fit_crc16(payload) == reference.value
    assert fit_crc16(memoryview(payload)[1:]) == fit_crc16(payload[1:])
    for split in {0, length // 3, length}:
        assert fit_crc16(payload[split:], fit_crc16(payload[:split])) == reference.value


# -- FIT files fitgen does not write ----------------------------------------------------

_FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)


def _definition(
    local: int,
    global_num: int,
    fields: list[tuple[int, int, int]],
    *,
    big_endian: bool = False,
    dev_fields: list[tuple[int, int, int]] | None = None,
) -> bytes:
    order: Literal["big", "little"] = "big" if big_endian else "little"
    header = 0x40 | local | (0x20 if dev_fields is not None else 0)
    out = bytes([header, 0, int(big_endian)]) + global_num.to_bytes(2, order)
    out += bytes([len(fields)]) + b"".join(bytes(f) for f in fields)
    if dev_fields is not None:
        out += bytes([len(dev_fields)]) + b"".join(bytes(f) for f in dev_fields)
    return out


def _fit_file(messages: bytes) -> bytes:
    header = bytearray(b"\x0e\x20\x00\x00" + len(messages).to_bytes(4, "little") + b".FIT\x00\x00")
    header[12:14] = fit_crc16(bytes(header[:12])).to_bytes(2, "little")
    body = bytes(header) + messages
    return body + fit_crc16(body).to_bytes(2, "little")


def _fit_seconds(when: datetime) -> int:
    return int((when - _FIT_EPOCH).total_seconds())


def _sessionless_fit(*, first: int, created: int, steps: int) -> tuple[bytes, list[int]]:
    """file_id, then records: one full timestamp, then compressed-timestamp headers.

    The records are big-endian and carry a developer field; there is no session."""
    out = _definition(0, 0, [(0, 1, 0x00), (4, 4, 0x86)])
    out += b"\x00" + bytes([4]) + created.to_bytes(4, "little")
    # record: timestamp (253, uint32) and heart_rate (3, uint8), plus a 2-byte dev field.
    out += _definition(
        1, 20, [(253, 4, 0x86), (3, 1, 0x02)], big_endian=True, dev_fields=[(0, 2, 0)]
    )
    out += b"\x01" + first.to_bytes(4, "big") + b"\x78" + b"\x00\x01"
    out += _definition(2, 20, [(3, 1, 0x02)], big_endian=True, dev_fields=[(0, 2, 0)])
    times, now = [first], first
    for step in range(steps):
        now += 7 + step % 3  # crosses the 32-second rollover of the 5-bit offset many times
        out += bytes([0x80 | (2 << 5) | (now & 0x1F)]) + b"\x79" + b"\x00\x02"
        times.append(now)
    return _fit_file(out), times


def test_compressed_timestamps_big_endian_and_developer_fields_read_as_fitparse_reads_them() -> (
    None
):
    """A session-less file of compressed-timestamp records starts and ends where fitparse says."""
    first = _fit_seconds(START)
    data, times = _sessionless_fit(first=first, created=first - 5, steps=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fitparse notes the developer field is undescribed
        with FitFile(io.BytesIO(data), check_developer_data=False) as fit:
            decoded = [m.get_raw_value("timestamp") for m in fit.get_messages("record")]
    assert decoded == times  # the bytes say what the test means
    summary = summarize_upload(data, "fit")
    assert summary.start_utc == START
    assert summary.elapsed_s == times[-1] - times[0]
    assert (summary.records, summary.sessions, summary.sport) == (201, 0, None)


def test_relative_record_times_fall_back_to_an_absolute_time_created() -> None:
    """Records in device time and an absolute file_id.time_created: the file starts then."""
    data, _ = _sessionless_fit(first=1_000, created=_fit_seconds(START), steps=20)
    summary = validate_activity_file_bytes(data)
    assert summary.start_utc == START
    assert summary.elapsed_s is None  # device time says nothing about when it ended


def test_fit_with_only_device_time_is_refused_before_upload(tmp_path: Path) -> None:
    """Records and file_id in device time only: read, then refused before upload."""
    data, _ = _sessionless_fit(first=1_000, created=900, steps=20)
    summary = summarize_upload(data, "fit")
    assert summary.start_utc is None
    assert summary.no_start_reason is not None
    assert "device-relative" in summary.no_start_reason
    path = tmp_path / "a.fit"
    path.write_bytes(data)
    with pytest.raises(FileRejected, match="Strava cannot place it in time"):
        validate_activity_file(ActivityFile(path=path, data_type="fit"))


def validate_activity_file_bytes(data: bytes) -> FileSummary:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.fit"
        path.write_bytes(data)
        return validate_activity_file(ActivityFile(path=path, data_type="fit"))


def test_data_message_before_its_definition_is_refused() -> None:
    """A data message of a local type never defined is refused, not guessed."""
    with pytest.raises(FileRejected, match="undefined local type"):
        summarize_upload(_fit_file(b"\x03" + b"\x00" * 8), "fit")


def test_definition_cut_by_the_end_of_the_data_is_refused() -> None:
    """A definition that claims more fields than the data holds is refused."""
    with pytest.raises(FileRejected, match="definition message runs past"):
        summarize_upload(_fit_file(_definition(0, 0, [(0, 1, 0)])[:-2]), "fit")


def test_two_chained_fitgen_runs_are_one_upload_of_the_first() -> None:
    """Two runs chained: accepted, two segments, the summary is the first run's."""
    first = fitgen.build_activity_fit(start_utc=START, duration_s=600)
    second = fitgen.build_activity_fit(start_utc=START + timedelta(hours=2), duration_s=60)
    summary = summarize_upload(first + second, "fit")
    assert (summary.segments, summary.start_utc, summary.elapsed_s) == (2, START, 600.0)


# -- nothing but FileRejected escapes ---------------------------------------------------


def test_fuzzed_fitgen_file_gives_a_summary_or_file_rejected(hour_run: bytes) -> None:
    """Cuts and flips of a generated run, CRCs recomputed, raise nothing but FileRejected."""
    body = hour_run[: 14 + 6_000]  # header and the first few hundred messages
    rng = random.Random(8)  # noqa: S311 - seeded: the same cases every run
    outcomes: list[object] = []
    mutants = [body[:cut] for cut in range(14, len(body), 37)]
    for _ in range(400):
        at = rng.randrange(14, len(body))
        mutants.append(body[:at] + bytes([rng.randrange(256)]) + body[at + 1 :])
    for mutant in mutants:
        head = bytearray(mutant[:14])
        head[4:8] = (len(mutant) - 14).to_bytes(4, "little")
        head[12:14] = fit_crc16(bytes(head[:12])).to_bytes(2, "little")
        framed = bytes(head) + mutant[14:]
        try:
            outcomes.append(
                summarize_upload(framed + fit_crc16(framed).to_bytes(2, "little"), "fit")
            )
        except FileRejected as exc:
            outcomes.append(exc)
    assert any(isinstance(o, FileSummary) for o in outcomes)
    assert any(str(o).startswith("FIT data is damaged") for o in outcomes)


@pytest.mark.parametrize("data_type", ["fit", "gpx", "tcx", "fit.gz", "gpx.gz", "tcx.gz"])
def test_random_bytes_are_refused_for_every_data_type(data_type: str) -> None:
    """Noise of many lengths, as any data type, raises FileRejected and nothing else."""
    rng = random.Random(data_type)  # noqa: S311 - seeded: the same cases every run
    for length in [0, 1, 11, 12, 13, 14, 15, 100, 5000]:
        noise = bytes(rng.randrange(256) for _ in range(length))
        for payload in (noise, b"\x0e\x10\x00\x00\x10\x00\x00\x00.FIT" + noise):
            with pytest.raises(FileRejected):
                summarize_upload(payload, data_type)


# -- GPX / TCX streaming ----------------------------------------------------------------


def test_gpx_is_streamed_not_built_in_memory(tmp_path: Path) -> None:
    """Checking a 4 MiB GPX peaks under 2 MiB of Python allocations (a tree would take 100s)."""
    path = tmp_path / "big.gpx"
    lines = [f'<trkpt lat="45.0" lon="13.0"><time>{START.isoformat()}</time></trkpt>'] * 60_000
    path.write_bytes(fitgen.build_gpx(start_utc=START, duration_s=60).replace(
        b"</trkseg>", "\n".join(lines).encode() + b"</trkseg>"
    ))  # fmt: skip
    assert path.stat().st_size > 4 * 1024 * 1024
    tracemalloc.start()
    try:
        summary = validate_activity_file(ActivityFile(path=path, data_type="gpx"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.records == 60_013
    assert peak < 2 * 1024 * 1024


def test_doctype_after_a_long_prefix_is_refused() -> None:
    """A DOCTYPE that starts past the first read chunk is refused all the same."""
    payload = b'<?xml version="1.0"?>' + b"<!--" + b"x" * 600_000 + b"-->"
    payload += b'<!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx>&a;</gpx>'
    with pytest.raises(FileRejected, match="DOCTYPE or ENTITY"):
        summarize_upload(payload, "gpx")
    with pytest.raises(FileRejected, match="DOCTYPE or ENTITY"):
        summarize_upload(gzip.compress(payload), "gpx.gz")


def test_tcx_without_an_activity_is_refused() -> None:
    """A TCX course (no Activity) is not an activity."""
    tcx = b'<TrainingCenterDatabase xmlns="x"><Courses><Course><Name>c</Name></Course></Courses>'
    with pytest.raises(FileRejected, match="no Activity"):
        summarize_upload(tcx + b"</TrainingCenterDatabase>", "tcx")


def test_tcx_elapsed_runs_to_the_last_trackpoint_past_the_lap_time() -> None:
    """A lap timer paused for a minute: elapsed is wall time to the last trackpoint."""
    tcx = fitgen.build_tcx(start_utc=START, duration_s=300)
    late = (START + timedelta(seconds=360)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tcx = tcx.replace(b"</Track>", f"<Trackpoint><Time>{late}</Time></Trackpoint></Track>".encode())
    summary = summarize_upload(tcx, "tcx")
    assert (summary.start_utc, summary.elapsed_s, summary.distance_m) == (START, 360.0, 1000.0)


def test_session_fields_declared_as_floats_or_out_of_range_are_not_used() -> None:
    """A session whose start is a float64 1e300 and distance a float32 inf reads, no overflow."""
    first = _fit_seconds(START)
    out = _definition(0, 0, [(0, 1, 0x00), (4, 4, 0x86)])
    out += b"\x00" + bytes([4]) + first.to_bytes(4, "little")
    out += _definition(1, 20, [(253, 4, 0x86)]) + b"\x01" + first.to_bytes(4, "little")
    # session: start_time (2) float64, total_elapsed_time (7) uint32, total_distance (9) float32
    out += _definition(2, 18, [(2, 8, 0x89), (7, 4, 0x86), (9, 4, 0x88)])
    out += b"\x02" + struct.pack("<dIf", 1e300, 60_000, float("inf"))
    summary = summarize_upload(_fit_file(out), "fit")
    assert summary.start_utc == START  # from the record, the session's start being unusable
    assert summary.distance_m is None


def test_xml_nested_without_end_is_refused() -> None:
    """GPX nested thousands deep is refused at a fixed depth, not followed."""
    with pytest.raises(FileRejected, match="deeper than"):
        summarize_upload(b"<gpx>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</gpx>", "gpx")


def test_xml_time_of_a_megabyte_is_refused() -> None:
    """A point time 1 MiB long is refused instead of being gathered."""
    payload = (
        b"<gpx><trk><trkseg><trkpt><time>" + b"1" * MIB + b"</time></trkpt></trkseg></trk></gpx>"
    )
    with pytest.raises(FileRejected, match="longer than"):
        summarize_upload(payload, "gpx")
