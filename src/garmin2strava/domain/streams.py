"""An activity's recorded streams (time, heart rate, position, ...), as Strava sends
them, and the rules about which activities have any. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "BACKGROUND_RESERVE",
    "STREAM_TYPES",
    "ActivityStreams",
    "has_recorded_file",
    "parse_stream_types",
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


def has_recorded_file(raw: Mapping[str, Any]) -> bool:
    """Whether Strava can have streams for this activity: one entered by hand
    (`manual: true`, no upload) has none, so asking would spend a read for nothing."""
    return raw.get("manual") is not True


@dataclass(frozen=True, slots=True)
class ActivityStreams:
    """One activity's streams as fetched once. `streams` maps a stream type to Strava's
    object for it (`data`, `series_type`, `original_size`, `resolution`); empty when
    Strava had none (it answered 404, or nothing of what was asked)."""

    user_id: str
    activity_id: int
    fetched_at: datetime
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.streams)

    def samples(self) -> int:
        """The longest stream's number of points."""
        return max((len(s.get("data") or []) for s in self.streams.values()), default=0)
