"""The Strava emulator's own reading of uploaded activity files (FIT, GPX, TCX).

Written apart from the daemon's file check on purpose, so a parsing mistake of the
daemon is not shared by its judge: FIT through `fitdecode`, GPX and TCX through a
small expat reader. What an upload must be to become an activity, and how it is
summarised: sandbox/README.md, "How it judges an upload". `fitdecode` is imported when
the emulator is created, which stops with one line when it is missing.
"""

from __future__ import annotations

import gzip
import importlib
import io
import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from xml.parsers import expat

__all__ = [
    "MALFORMED",
    "NO_TIME",
    "ActivityReading",
    "RefusedFile",
    "read_activity",
    "require_fit_reader",
]

# Strava's wording for the two refusals (the upload's `error` field). Strava's
# upload page and API answers quoted in public bug reports: "The upload appears to be
# malformed and we are unable to process it" for a file it cannot read, and "Time
# information is missing from file." for one it cannot place in time.
MALFORMED = "The upload appears to be malformed and we are unable to process it."
NO_TIME = "Time information is missing from file."

_INSTALL_HINT = (
    "the Strava sandbox reads uploads with fitdecode, which is not installed: "
    "pip install 'garmin2strava[sandbox]'"
)
_MAX_INFLATED = 64 * 1024 * 1024
_FIT_EPOCH_S = 631_065_600  # 1989-12-31T00:00:00Z in Unix seconds
_FIT_RELATIVE_LIMIT = 0x10000000  # below: seconds since the device powered on


class RefusedFile(Exception):
    """An upload Strava would refuse: `strava_error` is what its upload status says,
    `reason` what is wrong with the file, for people reading test output."""

    def __init__(self, strava_error: str, reason: str) -> None:
        super().__init__(reason)
        self.strava_error = strava_error
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ActivityReading:
    """What Strava takes from an accepted file."""

    data_type: str  # fit | gpx | tcx (without .gz)
    start_utc: datetime  # aware, UTC
    elapsed_s: float | None
    distance_m: float | None
    sport: str | None  # FIT sport name, TCX Sport attribute, GPX <type>, lower case
    sub_sport: str | None
    segments: int  # FIT files in a chain; 1 for GPX and TCX


def require_fit_reader() -> ModuleType:
    """`fitdecode`, or SystemExit with the one line that says how to install it."""
    try:
        return importlib.import_module("fitdecode")
    except ImportError:
        raise SystemExit(_INSTALL_HINT) from None


def read_activity(data: bytes, data_type: str) -> ActivityReading:
    """Read an upload as Strava would; RefusedFile when Strava would refuse it."""
    kind = data_type.lower()
    if kind.endswith(".gz"):
        data = _inflate(data)
        kind = kind.removesuffix(".gz")
    if not data:
        raise RefusedFile(MALFORMED, "the file is empty")
    if kind == "fit":
        return _read_fit(data)
    if kind in {"gpx", "tcx"}:
        return _read_xml(data, kind)
    raise RefusedFile(MALFORMED, f"unknown data_type {data_type!r}")


def _inflate(data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            inflated = stream.read(_MAX_INFLATED + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise RefusedFile(MALFORMED, f"gzip stream unreadable: {exc}") from None
    if len(inflated) > _MAX_INFLATED:
        raise RefusedFile(MALFORMED, "gzip stream inflates past 64 MiB")
    return inflated


# -- FIT ------------------------------------------------------------------------------


def _fit_time(value: Any) -> datetime | None:
    """A FIT date_time (seconds since 1989-12-31 UTC); None for device-relative ones."""
    if isinstance(value, bool) or not isinstance(value, int) or value < _FIT_RELATIVE_LIMIT:
        return None
    return datetime.fromtimestamp(_FIT_EPOCH_S + value, tz=UTC)


def _field(message: Any, name: str) -> Any:
    return message.get_value(name, fallback=None)


@dataclass
class _FitTally:
    first_type: Any = None
    segments: int = 0
    session_starts: list[datetime | None] | None = None
    session_ends: list[datetime] | None = None
    elapsed: list[float] | None = None
    distance: list[float] | None = None
    sport: Any = None
    sub_sport: Any = None
    first_record: datetime | None = None
    last_record: datetime | None = None

    def message(self, message: Any) -> None:
        # The activity is the first segment; the chained ones (a heart-rate strap's
        # data, settings) are checked whole but add nothing to the summary.
        if self.segments != 1:
            return
        if message.name == "record":
            self.record(message)
        elif message.name == "session":
            self.session(message)
        elif message.name == "file_id" and self.first_type is None:
            self.first_type = _field(message, "type")

    def session(self, message: Any) -> None:
        starts = self.session_starts = self.session_starts or []
        started = _fit_time(_field(message, "start_time"))
        starts.append(started)
        lasted = _field(message, "total_elapsed_time")
        if started is not None and isinstance(lasted, int | float) and not isinstance(lasted, bool):
            ends = self.session_ends = self.session_ends or []
            ends.append(started + timedelta(seconds=float(lasted)))
        if len(starts) == 1:
            self.sport, self.sub_sport = _field(message, "sport"), _field(message, "sub_sport")
        for name, into in (("total_elapsed_time", "elapsed"), ("total_distance", "distance")):
            value = _field(message, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values = getattr(self, into) or []
                values.append(float(value))
                setattr(self, into, values)

    def record(self, message: Any) -> None:
        when = _fit_time(_field(message, "timestamp"))
        if when is not None:
            self.first_record = self.first_record or when
            self.last_record = when


def _read_fit(data: bytes) -> ActivityReading:
    fitdecode = require_fit_reader()
    tally = _FitTally()
    try:
        # processor=None: values stay as the file has them (times as FIT seconds);
        # IGNORE tolerates odd field sizes as Strava does (COROS files), never a CRC.
        with fitdecode.FitReader(
            data,
            processor=None,
            check_crc=fitdecode.CrcCheck.RAISE,
            error_handling=fitdecode.ErrorHandling.IGNORE,
        ) as reader:
            for frame in reader:
                if isinstance(frame, fitdecode.FitHeader):
                    tally.segments += 1
                elif isinstance(frame, fitdecode.FitDataMessage):
                    tally.message(frame)
    except (fitdecode.FitError, ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
        raise RefusedFile(MALFORMED, f"FIT: {type(exc).__name__}: {exc}") from None
    if tally.segments == 0:
        raise RefusedFile(MALFORMED, "FIT: no FIT header")
    if tally.first_type != "activity":
        raise RefusedFile(MALFORMED, f"FIT: not an activity file (type {tally.first_type!r})")
    return _fit_reading(tally)


def _fit_reading(tally: _FitTally) -> ActivityReading:
    starts = [s for s in tally.session_starts or [] if s is not None]
    start = min(starts) if starts else tally.first_record
    if start is None:
        raise RefusedFile(NO_TIME, "FIT: no absolute timestamp in sessions or records")
    elapsed = (
        (max(tally.session_ends) - start).total_seconds()
        if tally.session_ends
        else math.fsum(tally.elapsed)
        if tally.elapsed
        else None
    )
    if elapsed is None and tally.first_record and tally.last_record:
        elapsed = (tally.last_record - tally.first_record).total_seconds()
    return ActivityReading(
        data_type="fit",
        start_utc=start,
        elapsed_s=elapsed,
        distance_m=math.fsum(tally.distance) if tally.distance else None,
        sport=None if tally.sport is None else str(tally.sport),
        sub_sport=None if tally.sub_sport is None else str(tally.sub_sport),
        segments=tally.segments,
    )


# -- GPX / TCX ------------------------------------------------------------------------


class _DeclarationRefused(Exception):
    pass


class _XmlWalk:
    """Streams the document once and keeps what a GPX or TCX summary needs: the text
    of elements by their path of local names, and TCX lap attributes."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.text: list[str] = []
        self.root: str | None = None
        self.point_times: list[str] = []  # GPX trkpt (or rtept) times, in order
        self.track_type: str | None = None
        self.activities = 0
        self.sport: str | None = None
        self.activity_id: str | None = None
        self.lap_starts: list[str] = []
        self.lap_seconds: list[str] = []
        self.lap_metres: list[str] = []
        self.last_trackpoint_time: str | None = None

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        name = tag.rpartition(" ")[2]
        if self.root is None:
            self.root = name
        self.stack.append(name)
        self.text = []
        if name == "Activity":
            self.activities += 1
            if self.activities == 1:
                self.sport = attributes.get("Sport")
        elif name == "Lap" and self.activities == 1 and "StartTime" in attributes:
            self.lap_starts.append(attributes["StartTime"])

    def end(self, _tag: str) -> None:
        value = "".join(self.text).strip()
        path = self.stack
        name, parent = path[-1], path[-2] if len(path) > 1 else ""
        if name == "time" and parent in {"trkpt", "rtept"}:
            self.point_times.append(value)
        elif name == "type" and parent == "trk" and self.track_type is None:
            self.track_type = value
        elif self.activities == 1 and parent == "Lap":
            if name == "TotalTimeSeconds":
                self.lap_seconds.append(value)
            elif name == "DistanceMeters":
                self.lap_metres.append(value)
        elif self.activities == 1 and name == "Time" and parent == "Trackpoint":
            self.last_trackpoint_time = value
        elif self.activities == 1 and name == "Id" and parent == "Activity":
            self.activity_id = value
        path.pop()
        self.text = []

    def chars(self, data: str) -> None:
        self.text.append(data)


def _refuse_declaration(*_args: object) -> None:
    raise _DeclarationRefused


def _walk(data: bytes, kind: str) -> _XmlWalk:
    walk = _XmlWalk()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = walk.start
    parser.EndElementHandler = walk.end
    parser.CharacterDataHandler = walk.chars
    # No DTD, no entities: an activity file needs neither, and they are how XML
    # bombs and external fetches get in.
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    try:
        parser.Parse(data, True)  # noqa: FBT003 - expat takes isfinal positionally only
    except _DeclarationRefused:
        raise RefusedFile(MALFORMED, f"{kind.upper()}: declares a DOCTYPE or entity") from None
    except expat.ExpatError as exc:
        raise RefusedFile(MALFORMED, f"{kind.upper()}: not well-formed XML ({exc})") from None
    expected = "gpx" if kind == "gpx" else "TrainingCenterDatabase"
    if walk.root != expected:
        raise RefusedFile(MALFORMED, f"{kind.upper()}: root element is {walk.root!r}")
    return walk


def _iso_time(text: str, kind: str) -> datetime:
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise RefusedFile(NO_TIME, f"{kind.upper()}: unreadable time {raw[:40]!r}") from None
    if value.tzinfo is None:  # GPX and TCX times are UTC unless they say otherwise
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _number_sum(values: list[str]) -> float | None:
    total: list[float] = []
    for value in values:
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            total.append(number)
    return math.fsum(total) if total else None


def _tcx_elapsed(walk: _XmlWalk, start: datetime) -> float | None:
    """From the start to the latest of each lap's end and the last trackpoint."""
    ends: list[datetime] = []
    for lap_start, lap_seconds in zip(walk.lap_starts, walk.lap_seconds, strict=False):
        seconds = _number_sum([lap_seconds])
        if seconds is not None:
            ends.append(_iso_time(lap_start, "tcx") + timedelta(seconds=seconds))
    if walk.last_trackpoint_time:
        ends.append(_iso_time(walk.last_trackpoint_time, "tcx"))
    if not ends:
        return _number_sum(walk.lap_seconds)
    longest = (max(ends) - start).total_seconds()
    return longest if longest > 0 else None


def _read_xml(data: bytes, kind: str) -> ActivityReading:
    walk = _walk(data, kind)
    if kind == "gpx":
        times = [_iso_time(t, kind) for t in walk.point_times if t]
        if not times:
            raise RefusedFile(NO_TIME, "GPX: no track point carries a time")
        return ActivityReading(
            data_type="gpx",
            start_utc=times[0],
            elapsed_s=(times[-1] - times[0]) / timedelta(seconds=1),
            distance_m=None,
            sport=walk.track_type.lower() if walk.track_type else None,
            sub_sport=None,
            segments=1,
        )
    if walk.activities == 0:
        raise RefusedFile(MALFORMED, "TCX: no Activity")
    stamp = walk.lap_starts[0] if walk.lap_starts else walk.activity_id
    if not stamp:
        raise RefusedFile(NO_TIME, "TCX: no lap StartTime and no activity Id")
    start = _iso_time(stamp, kind)
    return ActivityReading(
        data_type="tcx",
        start_utc=start,
        elapsed_s=_tcx_elapsed(walk, start),
        distance_m=_number_sum(walk.lap_metres),
        sport=walk.sport.lower() if walk.sport else None,
        sub_sport=None,
        segments=1,
    )
