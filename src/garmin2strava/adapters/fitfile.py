"""Activity files: unpack Garmin's ORIGINAL zip safely, then check what came out.

The one module that uses `fitparse`. The zip comes from the network, so extraction
trusts nothing in it: names, types, member count, sizes and compression ratio are
checked before anything is inflated, and sizes again while inflating. The file we
write gets a name of our choosing inside `workdir`; a failed extraction leaves
nothing behind.

Which member is the activity: members are classified by extension (.fit/.gpx/.tcx,
case-insensitive). One candidate: that one. Several: the one named like Garmin's
`{id}_ACTIVITY.fit` if exactly one is; otherwise the archive is refused rather than
guessing which file to upload.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from xml.etree import ElementTree as ET

from fitparse import FitFile
from fitparse.utils import FitParseError

from garmin2strava.errors import ArchiveRejected, FileRejected

__all__ = [
    "DATA_TYPES",
    "ActivityFile",
    "FileSummary",
    "extract_original",
    "fit_crc16",
    "summarize_upload",
    "validate_activity_file",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DATA_TYPES = {".fit": "fit", ".gpx": "gpx", ".tcx": "tcx"}
_GARMIN_MEMBER = re.compile(r"^\d+_ACTIVITY\.fit$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
_XML_DECLARATIONS = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ActivityFile:
    """An extracted activity file and the Strava `data_type` it uploads as."""

    path: Path
    data_type: str  # "fit" | "gpx" | "tcx"


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What a valid activity file says about itself."""

    data_type: str
    start_utc: datetime | None  # aware, UTC
    sport: str | None
    sub_sport: str | None
    elapsed_s: float | None
    distance_m: float | None
    records: int  # FIT record messages, GPX trkpt, TCX Trackpoint


# -- the ORIGINAL zip --------------------------------------------------------------


def extract_original(
    zip_bytes: bytes,
    workdir: Path,
    *,
    max_members: int = 8,
    max_total_bytes: int = 64 * MiB,
    max_ratio: int = 200,
) -> ActivityFile:
    """Write the activity file of an ORIGINAL zip into the existing `workdir`.

    Raises ArchiveRejected, naming the reason, for anything unsafe or unusable.
    """
    if len(zip_bytes) > max_total_bytes:
        raise ArchiveRejected(f"archive is {len(zip_bytes)} bytes, over {max_total_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ArchiveRejected(f"not a zip archive ({exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_members:
            raise ArchiveRejected(f"archive has {len(members)} members, over {max_members}")
        for info in members:
            _check_member(info, max_total_bytes, max_ratio)
        total = sum(info.file_size for info in members)
        if total > max_total_bytes:
            raise ArchiveRejected(f"archive expands to {total} bytes, over {max_total_bytes}")
        chosen = _choose_member(members)
        data_type = DATA_TYPES[PurePosixPath(chosen.filename).suffix.lower()]
        target = workdir / f"activity.{data_type}"
        limit = min(chosen.file_size, max_total_bytes)
        _inflate(archive, chosen, target, limit=limit, max_ratio=max_ratio)
    log.debug("original_extracted member_bytes=%s data_type=%s", chosen.file_size, data_type)
    return ActivityFile(path=target, data_type=data_type)


def _check_member(info: zipfile.ZipInfo, max_total_bytes: int, max_ratio: int) -> None:
    name = info.filename
    shown = name.encode("unicode_escape").decode()[:80]
    if not name or "\\" in name or "\x00" in name:
        raise ArchiveRejected(f"member name {shown!r} is not a plain relative path")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveRejected(f"member {shown!r} has an absolute path")
    if ".." in PurePosixPath(name).parts:
        raise ArchiveRejected(f"member {shown!r} climbs out with '..'")
    # Unix-made zips keep st_mode in the high half of external_attr; many writers set
    # only permission bits, so a zero file type counts as a regular file.
    file_type = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # noqa: PLR2004 - 3 is "Unix" in the zip spec
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "a symlink" if file_type == stat.S_IFLNK else "not a regular file"
        raise ArchiveRejected(f"member {shown!r} is {kind}")
    if info.flag_bits & 0x1:
        raise ArchiveRejected(f"member {shown!r} is encrypted")
    if info.file_size > max_total_bytes:
        raise ArchiveRejected(f"member {shown!r} expands to {info.file_size} bytes")
    if info.file_size > max_ratio * max(info.compress_size, 1):
        ratio = info.file_size // max(info.compress_size, 1)
        raise ArchiveRejected(f"member {shown!r} has compression ratio {ratio}, over {max_ratio}")


def _choose_member(members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    candidates = [
        info
        for info in members
        if not info.is_dir() and PurePosixPath(info.filename).suffix.lower() in DATA_TYPES
    ]
    if not candidates:
        raise ArchiveRejected("archive holds no .fit, .gpx or .tcx file")
    if len(candidates) == 1:
        return candidates[0]
    garmin_named = [c for c in candidates if _GARMIN_MEMBER.match(PurePosixPath(c.filename).name)]
    if len(garmin_named) == 1:
        return garmin_named[0]
    raise ArchiveRejected(f"archive holds {len(candidates)} activity files; refusing to guess")


def _inflate(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, *, limit: int, max_ratio: int
) -> None:
    # Inflate into a temporary sibling and rename at the end, so the target is either
    # complete or absent. zipfile stops at the declared size and checks the member CRC;
    # counting here as well keeps the limit ours, not the archive's.
    fd, partial_name = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".tmp")
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as out, archive.open(info) as member:
            _copy_limited(member, out, limit=limit, ceiling=max_ratio * max(info.compress_size, 1))
        partial.replace(target)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveRejected(f"member is damaged or unreadable ({exc})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _copy_limited(source: IO[bytes], out: IO[bytes], *, limit: int, ceiling: int) -> None:
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > limit or written > ceiling:
            raise ArchiveRejected(f"member inflates past {min(limit, ceiling)} bytes; refused")
        out.write(chunk)


# -- validation ---------------------------------------------------------------------


def validate_activity_file(f: ActivityFile) -> FileSummary:
    """Check an extracted file and summarise it. Raises FileRejected with the reason."""
    return summarize_upload(f.path.read_bytes(), f.data_type)


def summarize_upload(data: bytes, data_type: str) -> FileSummary:
    """Check activity file bytes as Strava's `data_type` names them (fit, gpx.gz, ...)."""
    kind = data_type.lower()
    if kind.endswith(".gz"):
        data = _gunzip(data)
        kind = kind.removesuffix(".gz")
    if kind == "fit":
        return _summarize_fit(data)
    if kind in ("gpx", "tcx"):
        return _summarize_xml(data, kind)
    raise FileRejected(f"unsupported data_type {data_type!r}")


def _gunzip(data: bytes, limit: int = 64 * MiB) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            inflated = stream.read(limit + 1)
    except (OSError, EOFError) as exc:
        raise FileRejected(f"gzip data is damaged ({exc})") from None
    if len(inflated) > limit:
        raise FileRejected(f"gzip data inflates past {limit} bytes")
    return inflated


# FIT ---------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    # FIT's CRC is CRC-16/ARC (reflected polynomial 0xA001, initial 0). A byte table
    # checks an hour's run in a few milliseconds; fitparse's own check is far slower.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def fit_crc16(data: bytes, crc: int = 0) -> int:
    """The FIT CRC-16 of `data`, continuing from `crc` (the sandbox's encoder uses it too)."""
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _check_fit_framing(data: bytes) -> None:
    if len(data) < 12 or data[8:12] != b".FIT":  # noqa: PLR2004 - the minimum header size
        raise FileRejected("not a FIT file (no .FIT header)")
    header_size = data[0]
    if header_size not in (12, 14):
        raise FileRejected(f"FIT header size {header_size} is neither 12 nor 14")
    (data_size,) = struct.unpack_from("<I", data, 4)
    expected = header_size + data_size + 2
    if len(data) < expected:
        raise FileRejected(f"FIT file truncated: {len(data)} of {expected} bytes")
    if len(data) > expected:
        # Chained FIT files exist in the spec, never in a watch's activity download.
        raise FileRejected(f"FIT file has {len(data) - expected} bytes after its CRC")
    if header_size == 14:  # noqa: PLR2004 - the header with a CRC
        (header_crc,) = struct.unpack_from("<H", data, 12)
        if header_crc and header_crc != fit_crc16(data[:12]):
            raise FileRejected("FIT header CRC mismatch")
    (file_crc,) = struct.unpack_from("<H", data, len(data) - 2)
    if file_crc != fit_crc16(data[:-2]):
        raise FileRejected("FIT file CRC mismatch")


def _summarize_fit(data: bytes) -> FileSummary:
    _check_fit_framing(data)
    file_id: dict[str, Any] | None = None
    session: dict[str, Any] | None = None
    first_record_time: Any = None
    records = 0
    try:
        # CRCs are checked above, faster; fitparse would compute them again in Python.
        # With check_crc=False fitparse does not consume the trailing CRC and reads it as
        # the header of a chained file, so it gets the bytes without it.
        with FitFile(io.BytesIO(data[:-2]), check_crc=False) as fit:
            for message in fit.get_messages(["file_id", "session", "record"]):
                if message.name == "record":
                    records += 1
                    if first_record_time is None:
                        first_record_time = message.get_value("timestamp")
                elif message.name == "file_id" and file_id is None:
                    file_id = message.get_values()
                elif message.name == "session" and session is None:
                    session = message.get_values()
    except (FitParseError, struct.error, KeyError, IndexError, TypeError, ValueError) as exc:
        raise FileRejected(f"FIT file cannot be parsed ({type(exc).__name__}: {exc})") from None
    if file_id is None:
        raise FileRejected("FIT file has no file_id message")
    if file_id.get("type") != "activity":
        raise FileRejected(f"FIT file is not an activity (type {file_id.get('type')!r})")
    session = session or {}
    start = (
        _fit_datetime(session.get("start_time"))
        or _fit_datetime(first_record_time)
        or _fit_datetime(file_id.get("time_created"))
    )
    return FileSummary(
        data_type="fit",
        start_utc=start,
        sport=_name(session.get("sport")),
        sub_sport=_name(session.get("sub_sport")),
        elapsed_s=_number(session.get("total_elapsed_time")),
        distance_m=_number(session.get("total_distance")),
        records=records,
    )


def _fit_datetime(value: Any) -> datetime | None:
    # fitparse gives naive datetimes that are UTC; values below 0x10000000 (device
    # uptime, not a date) stay ints and mean nothing to us.
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _name(value: Any) -> str | None:
    # An enum value newer than fitparse's profile comes back as its number.
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


# GPX / TCX ---------------------------------------------------------------------------

_ROOTS = {"gpx": "gpx", "tcx": "TrainingCenterDatabase"}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _summarize_xml(data: bytes, kind: str) -> FileSummary:
    # UTF-16/32 would hide a DOCTYPE from the byte scan below; activity XML is UTF-8.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise FileRejected(f"{kind.upper()} file is not UTF-8 XML")
    if _XML_DECLARATIONS.search(data):
        raise FileRejected(f"{kind.upper()} file declares a DOCTYPE or ENTITY; refused")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DOCTYPE/ENTITY declarations are refused above
    except ET.ParseError as exc:
        raise FileRejected(f"{kind.upper()} file is not well-formed XML ({exc})") from None
    if _local(root.tag) != _ROOTS[kind]:
        raise FileRejected(f"{kind.upper()} file has root element {_local(root.tag)!r}")
    return _summarize_gpx(root) if kind == "gpx" else _summarize_tcx(root)


def _children(root: ET.Element, name: str) -> list[ET.Element]:
    return [el for el in root.iter() if _local(el.tag) == name]


def _child_text(el: ET.Element, name: str) -> str | None:
    for child in el:
        if _local(child.tag) == name and child.text:
            return child.text.strip()
    return None


def _xml_time(text: str | None, kind: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise FileRejected(f"{kind} file has a bad time {text[:40]!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _summarize_gpx(root: ET.Element) -> FileSummary:
    points = _children(root, "trkpt") or _children(root, "rtept")
    times = [_xml_time(_child_text(p, "time"), "GPX") for p in points]
    stamped = [t for t in times if t is not None]
    if not stamped:
        metadata = _children(root, "metadata")
        stamped = [t for t in (_xml_time(_child_text(m, "time"), "GPX") for m in metadata) if t]
    track = _children(root, "trk")
    return FileSummary(
        data_type="gpx",
        start_utc=stamped[0] if stamped else None,
        sport=_child_text(track[0], "type") if track else None,
        sub_sport=None,
        elapsed_s=(stamped[-1] - stamped[0]).total_seconds() if len(stamped) > 1 else None,
        distance_m=None,
        records=len(points),
    )


def _summarize_tcx(root: ET.Element) -> FileSummary:
    activities = _children(root, "Activity")
    laps = _children(root, "Lap")
    start = None
    if laps:
        start = _xml_time(laps[0].get("StartTime"), "TCX")
    if start is None and activities:
        start = _xml_time(_child_text(activities[0], "Id"), "TCX")
    elapsed = distance = None
    with contextlib.suppress(TypeError, ValueError):
        elapsed = sum(float(_child_text(lap, "TotalTimeSeconds") or "") for lap in laps) or None
    with contextlib.suppress(TypeError, ValueError):
        distance = sum(float(_child_text(lap, "DistanceMeters") or "") for lap in laps) or None
    sport = activities[0].get("Sport") if activities else None
    return FileSummary(
        data_type="tcx",
        start_utc=start,
        sport=sport.lower() if sport else None,
        sub_sport=None,
        elapsed_s=elapsed,
        distance_m=distance,
        records=len(_children(root, "Trackpoint")),
    )
