"""Activity files: unpack Garmin's ORIGINAL zip safely, then check what came out.

`OriginalFiles.prepare` (extract, check, gzip what is large) is what the uploader
calls; `summarize_upload` reads a file's summary, and `validate_activity_file` (the
check before upload) refuses a damaged file or one Strava could not place in time. The
check never rewrites the file. The one module that uses `fitparse`, and only for the
FIT profile. The rules (the zip's members, FIT chains and CRCs, the summary of a
multisport file, uptime timestamps, GPX and TCX through expat) are in
docs/architecture.md, "The file check".
"""

from __future__ import annotations

import array
import functools
import gzip
import io
import logging
import math
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from xml.parsers import expat

from fitparse import profile
from fitparse.records import BASE_TYPES

from garmin2strava.domain.models import PreparedFile
from garmin2strava.errors import ArchiveRejected, FileRejected

__all__ = [
    "DATA_TYPES",
    "GZIP_ABOVE_BYTES",
    "ActivityFile",
    "FileSummary",
    "OriginalFiles",
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
    start_utc: datetime | None  # aware, UTC; None: nothing places the file in time
    sport: str | None
    sub_sport: str | None
    elapsed_s: float | None
    distance_m: float | None
    records: int  # FIT record messages, GPX trkpt (or rtept), TCX Trackpoint
    sessions: int = 0  # FIT session messages (a triathlon has several)
    segments: int = 1  # FIT files in the chain (the activity and what is chained to it)
    no_start_reason: str | None = None  # why start_utc is None


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
    log.debug("original_extracted", extra={"memberBytes": chosen.file_size, "dataType": data_type})
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
    """Check an extracted file before upload and summarise it.

    Raises FileRejected with the reason: everything `summarize_upload` refuses, and a
    file that carries no absolute time, which Strava cannot place.
    """
    if f.data_type in _XML_ROOTS:
        with f.path.open("rb") as stream:
            summary = _summarize_xml(stream, f.data_type)
    else:
        summary = summarize_upload(f.path.read_bytes(), f.data_type)
    if summary.start_utc is None:
        raise FileRejected(summary.no_start_reason or f"{f.data_type} file has no start time")
    return summary


def summarize_upload(data: bytes, data_type: str) -> FileSummary:
    """Read activity file bytes as Strava's `data_type` names them (fit, gpx.gz, ...).

    Refuses (FileRejected) what is damaged or not an activity. A file with no absolute
    time comes back with `start_utc` None and the reason in `no_start_reason`.
    """
    kind = data_type.lower()
    gzipped = kind.endswith(".gz")
    kind = kind.removesuffix(".gz")
    if kind == "fit":
        return _summarize_fit(_gunzip(data) if gzipped else data)
    if kind in _XML_ROOTS:
        if not gzipped:
            return _summarize_xml(io.BytesIO(data), kind)
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                return _summarize_xml(_LimitedReader(stream, _GUNZIP_LIMIT), kind)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileRejected(f"gzip data is damaged ({exc})") from None
    raise FileRejected(f"unsupported data_type {data_type!r}")


_GUNZIP_LIMIT = 64 * MiB


def _gunzip(data: bytes, limit: int = _GUNZIP_LIMIT) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            inflated = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"gzip data is damaged ({exc})") from None
    if len(inflated) > limit:
        raise FileRejected(f"gzip data inflates past {limit} bytes")
    return inflated


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _LimitedReader:
    """A binary stream that refuses to give more than `limit` bytes in all."""

    def __init__(self, stream: _Readable, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._left = limit

    def read(self, size: int) -> bytes:
        chunk = self._stream.read(size)
        self._left -= len(chunk)
        if self._left < 0:
            raise FileRejected(f"gzip data inflates past {self._limit} bytes")
        return chunk


# FIT: framing and CRC ------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    # FIT's CRC is CRC-16/ARC (reflected polynomial 0xA001, initial 0).
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


@functools.cache
def _crc_word_table() -> list[int]:
    # The CRC is linear and its register is 16 bits wide, so one step can take two
    # bytes: once a little-endian word is XOR-ed into the register and 16 bits have
    # shifted out, nothing of the old register is left, and the result depends on
    # (crc ^ word) alone: the byte step applied twice with zero bytes. Half the Python
    # iterations of the byte table; built on first use (65,536 entries),
    # so an import that checks no FIT file does not pay for it.
    byte_table = _CRC_TABLE
    table = []
    for value in range(0x10000):
        once = (value >> 8) ^ byte_table[value & 0xFF]
        table.append((once >> 8) ^ byte_table[once & 0xFF])
    return table


# Feeding the CRC a zero byte is a linear map of the 16-bit register, and that map has
# order 32767: the period of FIT's polynomial x^16+x^15+x^2+1 = (x+1)(x^15+x+1), whose
# second factor is primitive. The CRC (from 0) of a message is the XOR, over its bytes,
# of each byte's table entry pushed through that map once per byte that follows it; so
# two bytes 32767 places apart count alike, and XOR-ing the message's 32767-byte
# blocks together (aligned on its end, in C, as big integers) leaves a block with the
# same CRC. The check of a 64 MiB file then costs one 32 KiB CRC in Python.
_CRC_PERIOD = 32767


def fit_crc16(data: bytes | memoryview, crc: int = 0) -> int:
    """The FIT CRC-16 of `data`, continuing from `crc` (the sandbox's encoder uses it too)."""
    view = memoryview(data).cast("B")
    size = len(view)
    if size <= _CRC_PERIOD:
        return _crc_words(view, crc)
    head = size % _CRC_PERIOD  # a shorter first block is the same with leading zeros
    folded = int.from_bytes(view[:head], "big")
    for start in range(head, size, _CRC_PERIOD):
        folded ^= int.from_bytes(view[start : start + _CRC_PERIOD], "big")
    result = _crc_words(memoryview(folded.to_bytes(_CRC_PERIOD, "big")), 0)
    if crc:
        # Linearity again: a starting register adds what it becomes after `size` zero
        # bytes, which is what it becomes after `size % 32767` of them.
        result ^= _crc_words(memoryview(bytes(head)), crc)
    return result


def _crc_words(view: memoryview, crc: int) -> int:
    """The CRC, sequentially, two bytes a step."""
    even = len(view) & ~1
    table = _crc_word_table()
    words: Iterable[int]
    if sys.byteorder == "little":
        words = view[:even].cast("H")
    else:
        swapped = array.array("H", view[:even])
        swapped.byteswap()
        words = swapped
    for word in words:
        crc = table[crc ^ word]
    if len(view) & 1:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ view[-1]) & 0xFF]
    return crc


_HEADER_SIZES = (12, 14)


def _fit_segments(data: bytes) -> list[tuple[int, int]]:
    """Check the framing of every FIT file of a chain: (data start, data end) of each."""
    segments: list[tuple[int, int]] = []
    pos, total = 0, len(data)
    while pos < total or not segments:
        # The first file's defects read as they always have; a chained file's defect
        # names its place in the chain.
        where = "FIT" if not segments else f"chained FIT file {len(segments) + 1} (byte {pos}):"
        left = total - pos
        if segments and left < _HEADER_SIZES[0]:
            raise FileRejected(f"FIT file has {left} bytes after its CRC")
        if left < _HEADER_SIZES[0] or data[pos + 8 : pos + 12] != b".FIT":
            raise FileRejected(
                f"{where} no .FIT header" if segments else "not a FIT file (no .FIT header)"
            )
        header_size = data[pos]
        if header_size not in _HEADER_SIZES:
            raise FileRejected(f"{where} header size {header_size} is neither 12 nor 14")
        (data_size,) = struct.unpack_from("<I", data, pos + 4)
        end = pos + header_size + data_size
        if end + 2 > total:
            raise FileRejected(f"{where} file truncated: {left} of {end + 2 - pos} bytes")
        if header_size == _HEADER_SIZES[1]:
            (header_crc,) = struct.unpack_from("<H", data, pos + 12)
            if header_crc and header_crc != fit_crc16(memoryview(data)[pos : pos + 12]):
                raise FileRejected(f"{where} header CRC mismatch")
        (file_crc,) = struct.unpack_from("<H", data, end)
        if file_crc != fit_crc16(memoryview(data)[pos:end]):
            raise FileRejected(f"{where} file CRC mismatch")
        segments.append((pos + header_size, end))
        pos = end + 2
    return segments


# FIT: the message walker ---------------------------------------------------------------

_FIT_EPOCH = 631_065_600  # 1989-12-31T00:00:00Z, FIT's time zero, in Unix seconds
_ABSOLUTE = 0x10000000  # date_time values below this count device uptime, not a date
_FILE_ID, _SESSION, _RECORD, _EVENT, _ACTIVITY = 0, 18, 20, 21, 34
_TIMESTAMP = 253
# The fields decoded, by global message number; the rest of every message is skipped.
_PICKED = {_FILE_ID: (0, 4), _SESSION: (2, 5, 6, 7, 9, _TIMESTAMP), _ACTIVITY: (_TIMESTAMP,)}
# Base types a timestamp may be declared with, and their invalid value.
_TIMESTAMP_TYPES = {0x86: ("I", 0xFFFFFFFF), 0x8C: ("I", 0), 0x85: ("i", 0x7FFFFFFF)}
_TIMESTAMP_SIZE = 4
_FIT_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class _Pick:
    """One field to decode from a message: where, how, and its name in the profile."""

    offset: int
    unpack: Callable[[bytes, int], tuple[Any, ...]]
    parse: Callable[[Any], Any]  # fitparse's: None for the base type's invalid value
    name: str
    scale: float | None
    enum: dict[int, str] | None


@dataclass(frozen=True, slots=True)
class _Layout:
    """A definition message compiled once: the size of its data and what to read."""

    size: int
    global_num: int
    ts_at: int  # offset of a 4-byte timestamp field, -1 if none
    ts_unpack: Callable[[bytes, int], tuple[int]]
    ts_invalid: int
    picks: tuple[_Pick, ...]


@dataclass(slots=True)
class _FitContent:
    """What one FIT file of a chain holds for a summary (FIT times: raw seconds)."""

    file_type: str | None = None
    time_created: int | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    activity_ts: int | None = None
    records: int = 0
    first_abs: int | None = None  # first absolute record/event timestamp
    last_abs: int | None = None  # last one
    stamped: bool = False  # any timestamp at all, device-relative ones included


def _damaged(what: str, pos: int) -> FileRejected:
    return FileRejected(f"FIT data is damaged: {what} at byte {pos}")


@functools.cache
def _profile_field(global_num: int, number: int) -> tuple[str, float | None, dict[int, str] | None]:
    found = profile.MESSAGE_TYPES[global_num].fields[number]
    return found.name, found.scale, getattr(found.type, "values", None)


def _compile(fields: bytes, *, big_endian: bool, global_num: int, dev: bool) -> _Layout:
    # `fields` is the definition from its field count on: the field triples, then with
    # `dev` the developer field count and triples. Sizes are all a skip needs.
    endian = ">" if big_endian else "<"
    count = fields[0]
    wanted = _PICKED.get(global_num, ())
    offset, ts_at, (ts_fmt, ts_invalid) = 0, -1, _TIMESTAMP_TYPES[0x86]
    picks = []
    for i in range(count):
        number, size, base = fields[1 + 3 * i : 4 + 3 * i]
        if number == _TIMESTAMP and size == _TIMESTAMP_SIZE and base in _TIMESTAMP_TYPES:
            ts_at = offset
            ts_fmt, ts_invalid = _TIMESTAMP_TYPES[base]
        base_type = BASE_TYPES.get(base)
        # A field sized unlike its base type (the COROS file has some) does not decode
        # to a number in fitparse either: here it counts as absent.
        if number in wanted and base_type is not None and base_type.fmt != "s":
            fmt = endian + base_type.fmt
            if struct.calcsize(fmt) == size:
                name, scale, enum = _profile_field(global_num, number)
                unpack = struct.Struct(fmt).unpack_from
                picks.append(_Pick(offset, unpack, base_type.parse, name, scale, enum))
        offset += size
    if dev:
        dev_at = 1 + 3 * count
        offset += sum(fields[dev_at + 2 + 3 * i] for i in range(fields[dev_at]))
    return _Layout(
        size=offset,
        global_num=global_num,
        ts_at=ts_at,
        ts_unpack=struct.Struct(endian + ts_fmt).unpack_from,
        ts_invalid=ts_invalid,
        picks=tuple(picks),
    )


def _read_definition(
    data: bytes, pos: int, end: int, cache: dict[bytes, _Layout]
) -> tuple[_Layout, int]:
    """The definition message at `pos`, compiled, and where the next message starts."""
    dev = bool(data[pos] & 0x20)
    stop = pos + 6  # header, reserved, architecture, global number (2), field count
    if stop <= end:
        stop += 3 * data[stop - 1]
        if dev and stop < end:
            stop += 1 + 3 * data[stop]
        elif dev:
            stop = end + 1
    if stop > end:
        raise _damaged("definition message runs past the end of the data", pos)
    key = data[pos + 2 : stop] + (b"\x01" if dev else b"\x00")
    layout = cache.get(key)
    if layout is None:
        big_endian = data[pos + 2] != 0  # fitparse reads any non-zero byte as big-endian
        global_num = int.from_bytes(data[pos + 3 : pos + 5], "big" if big_endian else "little")
        layout = _compile(
            data[pos + 5 : stop], big_endian=big_endian, global_num=global_num, dev=dev
        )
        cache[key] = layout
    return layout, stop


def _walk_messages(data: bytes, pos: int, end: int) -> _FitContent:  # noqa: C901, PLR0912 - the per-message loop stays whole: a call per message would cost more than the walk
    """Walk every message of one FIT file of a chain, decoding only what a summary needs."""
    content = _FitContent()
    layouts: list[_Layout | None] = [None] * 16
    cache: dict[bytes, _Layout] = {}
    last_ts = 0  # what compressed timestamps count from: the last timestamp seen
    records = 0
    first_abs: int | None = None
    last_abs: int | None = None
    while pos < end:
        header = data[pos]
        ts: int | None = None
        if header & 0x80:  # compressed timestamp header: local type 0-3, 5-bit offset
            layout = layouts[(header >> 5) & 0x03]
            offset = header & 0x1F
            ts = (last_ts & ~0x1F) + offset + (0x20 if offset < (last_ts & 0x1F) else 0)
            last_ts = ts
        elif header & 0x40:
            layouts[header & 0x0F], pos = _read_definition(data, pos, end, cache)
            continue
        else:
            layout = layouts[header & 0x0F]
        if layout is None:
            raise _damaged("data message of an undefined local type", pos)
        body = pos + 1
        pos = body + layout.size
        if pos > end:
            raise _damaged("data message runs past the end of the data", body - 1)
        if layout.ts_at >= 0:
            (value,) = layout.ts_unpack(data, body + layout.ts_at)
            if value != layout.ts_invalid:
                last_ts = ts = value
        kind = layout.global_num
        if kind in (_RECORD, _EVENT):
            if kind == _RECORD:
                records += 1
            if ts is not None and ts >= _ABSOLUTE:
                if first_abs is None:
                    first_abs = ts
                last_abs = ts
        elif layout.picks:
            _take(content, kind, _decode(data, body, layout.picks), ts)
    content.records, content.first_abs, content.last_abs = records, first_abs, last_abs
    content.stamped = last_ts != 0
    return content


def _decode(data: bytes, body: int, picks: tuple[_Pick, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pick in picks:
        raw = pick.parse(pick.unpack(data, body + pick.offset)[0])
        if raw is None:
            values.pop(pick.name, None)  # fitparse keeps the last of repeated fields
        elif pick.enum is not None:
            values[pick.name] = pick.enum.get(raw, str(raw))
        else:
            value = raw / pick.scale if pick.scale else raw
            # A definition may declare any base type for a field (float64, sint64): only
            # finite numbers in FIT's unsigned 32-bit range are used, as times or sizes.
            if isinstance(value, (int, float)) and 0 <= value <= _FIT_MAX:
                values[pick.name] = value
            else:
                values.pop(pick.name, None)
    return values


def _take(content: _FitContent, kind: int, values: dict[str, Any], ts: int | None) -> None:
    if ts is not None:
        values.setdefault("timestamp", ts)
    if kind == _FILE_ID:
        if content.file_type is None:
            content.file_type = str(values.get("type"))
            content.time_created = values.get("time_created")
    elif kind == _SESSION:
        content.sessions.append(values)
    elif "timestamp" in values:
        content.activity_ts = values["timestamp"]


# FIT: the summary ----------------------------------------------------------------------


def _summarize_fit(data: bytes) -> FileSummary:
    segments = _fit_segments(data)
    contents = [_walk_messages(data, start, end) for start, end in segments]
    activity = contents[0]
    if activity.file_type is None:
        raise FileRejected("FIT file has no file_id message")
    if activity.file_type != "activity":
        raise FileRejected(f"FIT file is not an activity (type {activity.file_type!r})")
    start, elapsed = _fit_span(activity)
    sessions = activity.sessions
    distances = [s["total_distance"] for s in sessions if "total_distance" in s]
    sport, sub_sport = _fit_sport(sessions)
    reason = None
    if start is None:
        relative = activity.stamped or any(
            t is not None for t in (activity.time_created, *_session_starts(sessions))
        )
        reason = (
            "FIT file has only device-relative times (no absolute timestamp); "
            "Strava cannot place it in time"
            if relative
            else "FIT file has no timestamp at all; Strava cannot place it in time"
        )
    return FileSummary(
        data_type="fit",
        start_utc=_fit_datetime(start),
        sport=sport,
        sub_sport=sub_sport,
        elapsed_s=elapsed,
        distance_m=math.fsum(distances) if distances else None,
        records=activity.records,
        sessions=len(sessions),
        segments=len(segments),
        no_start_reason=reason,
    )


def _session_starts(sessions: list[dict[str, Any]]) -> list[float]:
    return [s["start_time"] for s in sessions if "start_time" in s]


def _session_span(session: dict[str, Any]) -> tuple[float, float] | None:
    """(start, end) of a session in FIT seconds, from whichever fields it has."""
    start, elapsed, stamp = (
        session.get("start_time"),
        session.get("total_elapsed_time"),
        session.get("timestamp"),
    )
    if start is not None and elapsed is not None:
        return start, start + elapsed
    if start is not None and stamp is not None and stamp >= start:
        return start, stamp
    if elapsed is not None and stamp is not None:
        return stamp - elapsed, stamp
    return None


def _fit_span(content: _FitContent) -> tuple[float | None, float | None]:
    """(absolute start in FIT seconds or None, elapsed seconds or None)."""
    spans = [span for s in content.sessions if (span := _session_span(s)) is not None]
    absolute = [span for span in spans if span[0] >= _ABSOLUTE]
    if absolute:
        spans = absolute
    if spans:
        first = min(span[0] for span in spans)
        # Offsets from the first start keep a single session's elapsed time exact.
        elapsed = max((span[0] - first) + (span[1] - span[0]) for span in spans)
        return (first if first >= _ABSOLUTE else _fallback_start(content)), elapsed
    start = _fallback_start(content)
    ends = [t for t in (content.last_abs, content.activity_ts) if t is not None and t >= _ABSOLUTE]
    if start is None or not ends or max(ends) <= start:
        return start, None
    return start, float(max(ends) - start)


def _fallback_start(content: _FitContent) -> float | None:
    for candidate in (content.first_abs, content.time_created):
        if candidate is not None and candidate >= _ABSOLUTE:
            return float(candidate)
    return None


def _fit_sport(sessions: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    sports = {s.get("sport") for s in sessions} - {None}
    if len(sports) > 1:
        return "multisport", None
    sub_sports = {s.get("sub_sport") for s in sessions}
    sport = next(iter(sports), None)
    return sport, next(iter(sub_sports)) if len(sub_sports) == 1 else None


def _fit_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(_FIT_EPOCH + seconds, UTC)


# GPX / TCX -----------------------------------------------------------------------------

_XML_ROOTS = {"gpx": "gpx", "tcx": "TrainingCenterDatabase"}
_XML_CHUNK = 256 * 1024
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_MAX_SECONDS = 10 * 366 * 86_400  # a lap or track longer than ten years is not a number we use
# What a hostile file could make us keep: GPX and TCX nest about ten deep, and the texts
# read (times, numbers, a sport) are short.
_MAX_DEPTH = 64
_MAX_TEXT = 1024


class _XmlActivity:
    """The expat handlers of one GPX or TCX file; keeps only what the summary needs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = kind.upper()
        self.path: list[str] = []
        self.text: list[str] | None = None  # collecting an element's text when a list
        self.text_length = 0
        # GPX
        self.points = {"trkpt": 0, "rtept": 0}
        self.point_times: dict[str, list[datetime]] = {"trkpt": [], "rtept": []}
        self.point_time: datetime | None = None
        self.track_type: str | None = None
        self.tracks = 0
        # TCX
        self.sports: list[str] = []
        self.activity_id: datetime | None = None
        self.lap_starts: list[datetime] = []
        self.lap_ends: list[float] = []
        self.lap: dict[str, float] = {}
        self.lap_distances: list[float] = []
        self.trackpoints = 0
        self.trackpoint_times: list[datetime] = []  # first and last only

    def refuse_declaration(self, *_: object) -> None:
        raise FileRejected(f"{self.label} file declares a DOCTYPE or ENTITY; refused")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        name = tag.rpartition("}")[2]
        parent = self.path[-1] if self.path else None
        if len(self.path) >= _MAX_DEPTH:
            raise FileRejected(f"{self.label} file nests elements deeper than {_MAX_DEPTH}")
        self.path.append(name)
        if parent is None:
            if name != _XML_ROOTS[self.kind]:
                raise FileRejected(f"{self.label} file has root element {name!r}")
            return
        if self.kind == "gpx":
            self._start_gpx(name, parent)
        else:
            self._start_tcx(name, parent, attrs)

    def _start_gpx(self, name: str, parent: str) -> None:
        if name in self.points:
            self.points[name] += 1
            self.point_time = None
        elif name == "trk":
            self.tracks += 1
        elif (name == "time" and parent in self.points) or (
            name == "type" and parent == "trk" and self.tracks == 1
        ):
            self.text = []

    def _start_tcx(self, name: str, parent: str, attrs: dict[str, str]) -> None:
        if name == "Activity":
            self.sports.append((attrs.get("Sport") or "").strip().lower())
        elif name == "Lap":
            self.lap = {}
            started = _xml_time(attrs.get("StartTime"), self.label)
            if started is not None:
                self.lap_starts.append(started)
                self.lap["start"] = started.timestamp()
        elif name == "Trackpoint":
            self.trackpoints += 1
        elif (
            (name == "Id" and parent == "Activity" and self.activity_id is None)
            or (name in ("TotalTimeSeconds", "DistanceMeters") and parent == "Lap")
            or (name == "Time" and parent == "Trackpoint")
        ):
            self.text = []

    def chars(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)
            self.text_length += len(data)
            if self.text_length > _MAX_TEXT:
                raise FileRejected(
                    f"{self.label} file has a value longer than {_MAX_TEXT} characters"
                )

    def end(self, _tag: str) -> None:
        name = self.path.pop()
        text = None
        if self.text is not None:
            text, self.text, self.text_length = "".join(self.text).strip(), None, 0
        if self.kind == "gpx":
            self._end_gpx(name, text)
        else:
            self._end_tcx(name, text)

    def _end_gpx(self, name: str, text: str | None) -> None:
        if text is not None and name == "time":
            self.point_time = _xml_time(text, self.label)
        elif text is not None and name == "type":
            self.track_type = text or None
        elif name in self.points and self.point_time is not None:
            _keep_ends(self.point_times[name], self.point_time)

    def _end_tcx(self, name: str, text: str | None) -> None:
        if text is not None and name == "Id":
            self.activity_id = _xml_time(text, self.label)
        elif text is not None and name == "Time":
            _keep_ends(self.trackpoint_times, _xml_time(text, self.label))
        elif text is not None and name in ("TotalTimeSeconds", "DistanceMeters"):
            value = _xml_number(text)
            if value is not None:
                self.lap[name] = value
        elif name == "Lap":
            if "DistanceMeters" in self.lap:
                self.lap_distances.append(self.lap["DistanceMeters"])
            if "start" in self.lap and "TotalTimeSeconds" in self.lap:
                self.lap_ends.append(self.lap["start"] + self.lap["TotalTimeSeconds"])

    def summary(self) -> FileSummary:
        return self._gpx_summary() if self.kind == "gpx" else self._tcx_summary()

    def _gpx_summary(self) -> FileSummary:
        which = "trkpt" if self.points["trkpt"] else "rtept"
        times = self.point_times[which]
        start = times[0] if times else None
        elapsed = (times[-1] - times[0]).total_seconds() if times else 0.0
        return FileSummary(
            data_type="gpx",
            start_utc=start,
            sport=self.track_type,
            sub_sport=None,
            elapsed_s=elapsed if elapsed > 0 else None,
            distance_m=None,
            records=self.points[which],
            no_start_reason=None
            if start
            else "GPX file has no point with a time (a route or an untimed track); "
            "Strava cannot place it in time",
        )

    def _tcx_summary(self) -> FileSummary:
        if not self.sports:
            raise FileRejected("TCX file holds no Activity (a course?); not an activity")
        points = self.trackpoint_times
        start = self.lap_starts[0] if self.lap_starts else self.activity_id
        if start is None and points:
            start = points[0]
        elapsed = None
        if start is not None:
            ends = [*self.lap_ends, *(p.timestamp() for p in points[-1:])]
            longest = max(ends, default=start.timestamp()) - start.timestamp()
            elapsed = longest if longest > 0 else None
        sports = set(self.sports)
        return FileSummary(
            data_type="tcx",
            start_utc=start,
            sport=("multisport" if len(sports) > 1 else self.sports[0]) or None,
            sub_sport=None,
            elapsed_s=elapsed,
            distance_m=math.fsum(self.lap_distances) if self.lap_distances else None,
            records=self.trackpoints,
            no_start_reason=None
            if start
            else "TCX file has no lap, activity or trackpoint time; Strava cannot place it in time",
        )


def _keep_ends(ends: list[datetime], when: datetime | None) -> None:
    # Only the first and the last time are kept: memory does not grow with the file.
    if when is None:
        return
    if len(ends) < 2:  # noqa: PLR2004 - first and last
        ends.append(when)
    else:
        ends[1] = when


def _xml_time(text: str | None, label: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise FileRejected(f"{label} file has a bad time {text[:40]!r}") from None


def _xml_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= _MAX_SECONDS * 1000 else None


def _summarize_xml(stream: _Readable, kind: str) -> FileSummary:
    handlers = _XmlActivity(kind)
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = handlers.refuse_declaration
    parser.EntityDeclHandler = handlers.refuse_declaration
    parser.StartElementHandler = handlers.start
    parser.EndElementHandler = handlers.end
    parser.CharacterDataHandler = handlers.chars
    label = kind.upper()
    first = True
    try:
        while chunk := stream.read(_XML_CHUNK):
            # Activity XML is UTF-8 (Garmin's, every device's): UTF-16/32 is refused, not guessed.
            if (first and chunk.startswith(_WIDE_BOMS)) or b"\x00" in chunk:
                raise FileRejected(f"{label} file is not UTF-8 XML")
            first = False
            parser.Parse(chunk, False)  # noqa: FBT003 - expat's positional isfinal
        parser.Parse(b"", True)  # noqa: FBT003 - expat's positional isfinal
    except expat.ExpatError as exc:
        raise FileRejected(f"{label} file is not well-formed XML ({exc})") from None
    return handlers.summary()


# -- what goes to Strava ------------------------------------------------------------------

GZIP_ABOVE_BYTES = 8 * MiB  # a 6-hour ride's FIT is under 1 MiB


class OriginalFiles:
    """The uploader's ActivityFiles: extract the ORIGINAL, check it, gzip it when large."""

    def __init__(self, *, gzip_above_bytes: int = GZIP_ABOVE_BYTES) -> None:
        self._gzip_above = gzip_above_bytes

    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        extracted = extract_original(original_zip, workdir)
        summary = validate_activity_file(extracted)
        path, data_type = extracted.path, extracted.data_type
        if path.stat().st_size > self._gzip_above:
            path, data_type = _gzipped(path), f"{data_type}.gz"
        return PreparedFile(
            path=path, data_type=data_type, start_utc=summary.start_utc, sport=summary.sport
        )


def _gzipped(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=6) as out:
        shutil.copyfileobj(source, out, _CHUNK)
    path.unlink()
    return target
