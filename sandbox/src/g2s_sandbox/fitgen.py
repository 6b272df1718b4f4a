"""Activity files for the emulators and the tests: a small FIT encoder, GPX, ORIGINAL zips.

Stdlib only, and apart from the daemon's FIT check (its own CRC too). Writes just
the FIT messages a real watch file starts with and a sync daemon reads (file_id,
record, lap, session, activity), little-endian, protocol 2.0, 14-byte header with its
CRC and the 2-byte file CRC. The hostile builders make the broken files and unsafe
archives the file adapter must refuse.
"""

from __future__ import annotations

import io
import math
import stat
import struct
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

__all__ = [
    "FIT_EPOCH",
    "SPORTS",
    "SUB_SPORTS",
    "build_activity_fit",
    "build_gpx",
    "build_tcx",
    "corrupt_crc",
    "fit_crc16",
    "not_a_zip",
    "truncate",
    "wrong_header",
    "zip_absolute_path",
    "zip_bomb",
    "zip_no_activity",
    "zip_original",
    "zip_symlink",
    "zip_too_many_members",
    "zip_traversal",
]

FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
_PROTOCOL_VERSION = 0x20  # 2.0
_PROFILE_VERSION = 2132  # 21.32

# Values from the FIT profile (Profile.xlsx, "sport" and "sub_sport" types).
SPORTS: dict[str, int] = {
    "generic": 0,
    "running": 1,
    "cycling": 2,
    "fitness_equipment": 4,
    "swimming": 5,
    "training": 10,
    "walking": 11,
    "cross_country_skiing": 12,
    "rowing": 15,
    "hiking": 17,
}
SUB_SPORTS: dict[str, int] = {
    "generic": 0,
    "treadmill": 1,
    "street": 2,
    "trail": 3,
    "track": 4,
    "indoor_cycling": 6,
    "road": 7,
    "mountain": 8,
    "virtual_activity": 58,
    "indoor_running": 45,
}

# FIT base types (field definition byte 3).
_ENUM, _UINT8, _UINT16, _SINT32, _UINT32, _UINT32Z = 0x00, 0x02, 0x84, 0x85, 0x86, 0x8C
_BASE_TYPE_FORMAT = {
    _ENUM: "B",
    _UINT8: "B",
    _UINT16: "H",
    _SINT32: "i",
    _UINT32: "I",
    _UINT32Z: "I",
}

_MESG_FILE_ID, _MESG_SESSION, _MESG_LAP, _MESG_RECORD, _MESG_ACTIVITY = 0, 18, 19, 20, 34
_TIMESTAMP = 253
_EVENT_LAP, _EVENT_SESSION, _EVENT_ACTIVITY, _EVENT_TYPE_STOP = 9, 8, 26, 1
_FILE_TYPE_ACTIVITY, _MANUFACTURER_GARMIN, _PRODUCT_FR965 = 4, 1, 4315

_START_LAT, _START_LON = 47.3769, 8.5417  # Zurich; any land point works
_SEMICIRCLES_PER_DEGREE = 2**31 / 180


@dataclass(frozen=True, slots=True)
class _MessageType:
    local: int
    definition: bytes
    packer: struct.Struct

    @classmethod
    def define(cls, local: int, global_num: int, fields: list[tuple[int, int]]) -> _MessageType:
        """`fields` are (field number, base type); sizes follow from the base type."""
        packer = struct.Struct("<" + "".join(_BASE_TYPE_FORMAT[bt] for _, bt in fields))
        header = struct.pack("<BBBHB", 0x40 | local, 0, 0, global_num, len(fields))
        field_defs = b"".join(
            struct.pack("<BBB", num, struct.calcsize("<" + _BASE_TYPE_FORMAT[bt]), bt)
            for num, bt in fields
        )
        return cls(local=local, definition=header + field_defs, packer=packer)

    def data(self, *values: int) -> bytes:
        return bytes((self.local,)) + self.packer.pack(*values)


# The FIT SDK's CRC (the protocol document's `FitCRC_Get16`): four bits at a time
# through this 16-entry table. Spread here to a byte table, two nibbles per entry, so
# an hour's run is checked in milliseconds.
_CRC_NIBBLES = (
    0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
    0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400,
)  # fmt: skip


def _crc_nibbles(crc: int, byte: int) -> int:
    crc = (crc >> 4) ^ _CRC_NIBBLES[crc & 0xF] ^ _CRC_NIBBLES[byte & 0xF]
    return (crc >> 4) ^ _CRC_NIBBLES[crc & 0xF] ^ _CRC_NIBBLES[(byte >> 4) & 0xF]


# crc' = (crc >> 8) ^ _CRC_BYTES[(crc ^ byte) & 0xFF]: the nibble steps are linear, so
# the low byte of crc and the input byte only matter through their XOR.
_CRC_BYTES = tuple(_crc_nibbles(0, byte) for byte in range(256))


def fit_crc16(data: bytes, crc: int = 0) -> int:
    """The FIT CRC-16 of `data`, continuing from `crc`."""
    table = _CRC_BYTES
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _fit_time(when: datetime) -> int:
    return int((when - FIT_EPOCH).total_seconds())


def _wrap_fit(data: bytes) -> bytes:
    header = struct.pack("<BBHI4s", 14, _PROTOCOL_VERSION, _PROFILE_VERSION, len(data), b".FIT")
    header += struct.pack("<H", fit_crc16(header))
    body = header + data
    return body + struct.pack("<H", fit_crc16(body))


def _lookup(table: dict[str, int], name: str, what: str) -> int:
    try:
        return table[name]
    except KeyError:
        msg = f"unknown {what} {name!r}; known: {', '.join(sorted(table))}"
        raise ValueError(msg) from None


def build_activity_fit(
    *,
    start_utc: datetime,
    duration_s: int,
    sport: str = "running",
    sub_sport: str = "generic",
    distance_m: float | None = None,
    with_gps: bool = True,
    serial: int = 1,
) -> bytes:
    """A complete FIT activity: one record per second, one lap, one session.

    `distance_m` defaults to a 5:00/km pace. Without GPS the records carry no position
    (a treadmill run). Values are realistic but deterministic for a given input.
    """
    if start_utc.tzinfo is None:
        raise ValueError("start_utc must be timezone-aware")
    if duration_s < 1:
        raise ValueError("duration_s must be at least 1")
    sport_value = _lookup(SPORTS, sport, "sport")
    sub_sport_value = _lookup(SUB_SPORTS, sub_sport, "sub_sport")
    total_m = duration_s / 300 * 1000 if distance_m is None else distance_m
    speed = total_m / duration_s  # m/s
    t0 = _fit_time(start_utc)
    t_end = t0 + duration_s

    file_id = _MessageType.define(
        0,
        _MESG_FILE_ID,
        [(0, _ENUM), (1, _UINT16), (2, _UINT16), (3, _UINT32Z), (4, _UINT32)],
    )
    record_fields = [(_TIMESTAMP, _UINT32), (5, _UINT32), (6, _UINT16), (3, _UINT8), (2, _UINT16)]
    if with_gps:
        record_fields += [(0, _SINT32), (1, _SINT32)]
    record = _MessageType.define(1, _MESG_RECORD, record_fields)
    summary_fields = [
        (_TIMESTAMP, _UINT32),
        (0, _ENUM),  # event
        (1, _ENUM),  # event_type
        (2, _UINT32),  # start_time
        (7, _UINT32),  # total_elapsed_time, ms
        (8, _UINT32),  # total_timer_time, ms
        (9, _UINT32),  # total_distance, cm
    ]
    lap = _MessageType.define(2, _MESG_LAP, [*summary_fields, (25, _ENUM), (39, _ENUM)])
    session = _MessageType.define(
        3, _MESG_SESSION, [*summary_fields, (5, _ENUM), (6, _ENUM), (25, _UINT16), (26, _UINT16)]
    )
    activity = _MessageType.define(
        4,
        _MESG_ACTIVITY,
        [(_TIMESTAMP, _UINT32), (0, _UINT32), (1, _UINT16), (2, _ENUM), (3, _ENUM), (4, _ENUM)],
    )

    out = io.BytesIO()
    out.write(file_id.definition)
    out.write(file_id.data(_FILE_TYPE_ACTIVITY, _MANUFACTURER_GARMIN, _PRODUCT_FR965, serial, t0))
    out.write(record.definition)
    lat0 = _START_LAT * _SEMICIRCLES_PER_DEGREE
    lon0 = _START_LON * _SEMICIRCLES_PER_DEGREE
    # A loop of the distance's length: the track comes back near the start.
    radius_deg = total_m / (2 * math.pi) / 111_320
    pack = record.packer.pack
    local = bytes((record.local,))
    for second in range(duration_s + 1):
        distance = speed * second
        heart_rate = 120 + min(45, second // 20) + (second % 7)
        altitude = 410 + 15 * math.sin(second / 300)
        values = [
            t0 + second,
            round(distance * 100),
            round(speed * 1000),
            heart_rate,
            round((altitude + 500) * 5),
        ]
        if with_gps:
            angle = 2 * math.pi * distance / total_m if total_m else 0.0
            values.append(round(lat0 + radius_deg * math.sin(angle) * _SEMICIRCLES_PER_DEGREE))
            values.append(
                round(lon0 + radius_deg * (1 - math.cos(angle)) * _SEMICIRCLES_PER_DEGREE)
            )
        out.write(local)
        out.write(pack(*values))
    elapsed_ms, distance_cm = duration_s * 1000, round(total_m * 100)
    summary = (t_end, _EVENT_TYPE_STOP, t0, elapsed_ms, elapsed_ms, distance_cm)
    out.write(lap.definition)
    out.write(lap.data(summary[0], _EVENT_LAP, *summary[1:], sport_value, sub_sport_value))
    out.write(session.definition)
    out.write(
        session.data(summary[0], _EVENT_SESSION, *summary[1:], sport_value, sub_sport_value, 0, 1)
    )
    out.write(activity.definition)
    out.write(activity.data(t_end, elapsed_ms, 1, 0, _EVENT_ACTIVITY, _EVENT_TYPE_STOP))
    return _wrap_fit(out.getvalue())


def _track_points(start_utc: datetime, duration_s: int, step_s: int) -> list[tuple[str, float]]:
    points = []
    for second in range(0, duration_s + 1, step_s):
        when = (start_utc + timedelta(seconds=second)).astimezone(UTC)
        points.append((when.strftime("%Y-%m-%dT%H:%M:%SZ"), second / 300 * 1000))
    return points


_GPX_ROOT = '<gpx version="1.1" creator="garmin2strava" xmlns="http://www.topografix.com/GPX/1/1">'
_TCX_ROOT = (
    '<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2">'
)


def build_gpx(*, start_utc: datetime, duration_s: int, name: str = "Run") -> bytes:
    """A GPX 1.1 track, one point every 5 s, moving north at 5:00/km."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        _GPX_ROOT,
        f"<trk><name>{escape(name)}</name><type>running</type><trkseg>",
    ]
    for when, metres in _track_points(start_utc, duration_s, 5):
        lat = _START_LAT + metres / 111_320
        lines.append(f'<trkpt lat="{lat:.7f}" lon="{_START_LON:.7f}"><time>{when}</time></trkpt>')
    lines.append("</trkseg></trk></gpx>")
    return "\n".join(lines).encode()


def build_tcx(*, start_utc: datetime, duration_s: int, sport: str = "Running") -> bytes:
    """A TCX activity with one lap and a track, one point every 5 s."""
    points = _track_points(start_utc, duration_s, 5)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        _TCX_ROOT,
        f'<Activities><Activity Sport="{escape(sport)}"><Id>{points[0][0]}</Id>',
        f'<Lap StartTime="{points[0][0]}"><TotalTimeSeconds>{duration_s}</TotalTimeSeconds>',
        f"<DistanceMeters>{points[-1][1]:.1f}</DistanceMeters><Track>",
    ]
    lines.extend(
        f"<Trackpoint><Time>{when}</Time><DistanceMeters>{metres:.1f}</DistanceMeters></Trackpoint>"
        for when, metres in points
    )
    lines.append("</Track></Lap></Activity></Activities></TrainingCenterDatabase>")
    return "\n".join(lines).encode()


# -- ORIGINAL zips --------------------------------------------------------------------


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, payload in members:
            archive.writestr(info, payload)
    return buf.getvalue()


def zip_original(activity_id: int, payload: bytes, *, member_name: str | None = None) -> bytes:
    """The zip Garmin's ORIGINAL download returns: one member `{id}_ACTIVITY.fit`."""
    return _zip([(member_name or f"{activity_id}_ACTIVITY.fit", payload)])


def zip_traversal(payload: bytes, *, member_name: str = "../evil.fit") -> bytes:
    """A member whose name climbs out of the extraction directory."""
    return _zip([(member_name, payload)])


def zip_absolute_path(payload: bytes, *, member_name: str = "/tmp/evil.fit") -> bytes:  # noqa: S108 - a hostile name, never written
    """A member with an absolute path."""
    return _zip([(member_name, payload)])


def zip_symlink(activity_id: int, *, target: str = "/etc/passwd") -> bytes:
    """A member that is a symlink (Unix mode in external_attr) named like the activity."""
    info = zipfile.ZipInfo(f"{activity_id}_ACTIVITY.fit")
    info.create_system = 3  # Unix, so the mode bits count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _zip([(info, target.encode())])


def zip_too_many_members(activity_id: int, payload: bytes, *, count: int = 50) -> bytes:
    """The activity plus `count` small text members."""
    extras: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        (f"notes_{n}.txt", b"note") for n in range(count)
    ]
    return _zip([(f"{activity_id}_ACTIVITY.fit", payload), *extras])


def zip_bomb(activity_id: int, *, size: int = 50 * 1024 * 1024) -> bytes:
    """One activity member of `size` zero bytes: a ratio of about 1000:1."""
    buf = io.BytesIO()
    chunk = bytes(1024 * 1024)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # noqa: SIM117 - two resources, nested for clarity
        with archive.open(f"{activity_id}_ACTIVITY.fit", "w", force_zip64=True) as member:
            remaining = size
            while remaining > 0:
                member.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
    return buf.getvalue()


def zip_no_activity(activity_id: int) -> bytes:
    """A well-formed zip with only a text member."""
    return _zip([(f"{activity_id}_README.txt", b"no activity here\n")])


def not_a_zip() -> bytes:
    """Bytes that are no archive at all (an HTML error page)."""
    return b"<html><body>Service Unavailable</body></html>\n"


# -- broken FIT files -----------------------------------------------------------------


def corrupt_crc(fit: bytes) -> bytes:
    """The same file with its trailing file CRC flipped."""
    return fit[:-2] + bytes(b ^ 0xFF for b in fit[-2:])


def truncate(fit: bytes, keep: int) -> bytes:
    """The first `keep` bytes, as an interrupted download leaves them."""
    return fit[:keep]


def wrong_header(fit: bytes) -> bytes:
    """The `.FIT` tag replaced, header CRC left as it was."""
    return fit[:8] + b".TIF" + fit[12:]
