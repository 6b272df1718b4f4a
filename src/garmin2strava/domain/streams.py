"""An activity's recorded streams (time, heart rate, position, ...), as Strava sends
them, and the rules about which activities have any. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "BACKGROUND_RESERVE",
    "MAX_STREAM_FAILURES",
    "STREAM_TYPES",
    "ActivityStreams",
    "PendingStreams",
    "gave_up_note",
    "has_recorded_file",
    "parse_stream_types",
    "stream_retry_at",
]

# The streams a user may ask the mirror to keep (G2S_MIRROR_STREAMS), in Strava's names.
STREAM_TYPES = (
    "time",
    "heartrate",
    "latlng",
    "altitude",
    "cadence",
    "watts",
    "velocity_smooth",
    "distance",
)

# The share of each read window that background reads (streams, reconciliation) leave
# to the uploader: they stop once 80 % of a window's reads are spent.
BACKGROUND_RESERVE = 0.2


def parse_stream_types(value: str | Iterable[str]) -> tuple[str, ...]:
    """`"time, heartrate"` -> ("time", "heartrate"): known names only, each once, in the
    order given. Empty means no streams. Raises ValueError naming what is unknown."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    unknown = [n for n in names if n not in STREAM_TYPES]
    if unknown:
        msg = f"unknown stream type(s) {', '.join(unknown)}; choose from {', '.join(STREAM_TYPES)}"
        raise ValueError(msg)
    return names


# A stream read that fails for another reason than the budget (Strava answering 500
# for one activity, say) is tried again after 5 min, then 10, 20 ... (the catch-up runs
# every 5 min); the 8th failure gives the activity up (some 10.5 h after the first).
MAX_STREAM_FAILURES = 8
_FIRST_STREAM_RETRY = timedelta(minutes=5)


def stream_retry_at(failures: int, *, now: datetime) -> datetime | None:
    """When to read an activity's streams again after its `failures`-th failed read
    (1, 2, ...): 5 min doubling; None once MAX_STREAM_FAILURES is reached (give up).
    A budget deferral is not a failure and never comes here."""
    if failures < 1:
        msg = f"failures counts failed reads, from 1 (got {failures})"
        raise ValueError(msg)
    if failures >= MAX_STREAM_FAILURES:
        return None
    return now + _FIRST_STREAM_RETRY * (1 << (failures - 1))


def gave_up_note(failures: int, error: str) -> str:
    """What an activity given up on keeps instead of streams (`workouts show --streams`)."""
    return f"gave up after {failures} failed reads; the last: {error}"


@dataclass(frozen=True, slots=True)
class PendingStreams:
    """An activity whose streams are still to be read: `failures` failed reads so far
    (budget deferrals do not count), not before `retry_at` (None: at the next pass)."""

    activity_id: int
    failures: int = 0
    retry_at: datetime | None = None


def has_recorded_file(raw: Mapping[str, Any]) -> bool:
    """Whether Strava can have streams for this activity: one entered by hand
    (`manual: true`, no upload) has none, so asking would spend a read for nothing."""
    return raw.get("manual") is not True


@dataclass(frozen=True, slots=True)
class ActivityStreams:
    """One activity's streams as fetched once. `streams` maps a stream type to Strava's
    object for it (`data`, `series_type`, `original_size`, `resolution`); empty when
    Strava had none (it answered 404, or nothing of what was asked), or the reads were
    given up (`note` says why: MAX_STREAM_FAILURES failed reads)."""

    user_id: str
    activity_id: int
    fetched_at: datetime
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None

    @property
    def found(self) -> bool:
        return bool(self.streams)

    def samples(self) -> int:
        """The longest stream's number of points."""
        return max((len(s.get("data") or []) for s in self.streams.values()), default=0)
