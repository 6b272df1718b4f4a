"""The Strava emulator's activity streams: GET /activities/{id}/streams.

Strava keeps the samples of the uploaded file; the emulator makes them up for an
activity, one a second over its elapsed time, seeded by its id (the same activity
always answers the same numbers; numbers with noise in them, so they compress like
real recordings and not like a ramp). Shaped as the API answers (v3 reference,
"getActivityStreams"): with `key_by_type=true` an object keyed by type, else a list of
stream objects each naming its `type`; every stream carries `data`, `series_type`,
`original_size` and `resolution`. Types the activity does not have are left out
(`watts` is a ride's only); `distance` comes along whatever was asked, as Strava's
does. A manual activity has no streams: 404. Stdlib only."""

from __future__ import annotations

import math
import random
from typing import Any

from g2s_sandbox.strava_records import SandboxActivity

__all__ = ["KNOWN_TYPES", "activity_streams"]

_MOVING_SPEED = 0.3  # m/s: slower counts as standing still

KNOWN_TYPES = (
    "time",
    "latlng",
    "distance",
    "altitude",
    "velocity_smooth",
    "heartrate",
    "cadence",
    "watts",
    "temp",
    "moving",
    "grade_smooth",
)


def activity_streams(
    activity: SandboxActivity, keys: str, *, key_by_type: bool
) -> tuple[int, dict[str, Any] | list[Any]]:
    """(status, body) for GET /activities/{id}/streams?keys=...&key_by_type=..."""
    if activity.manual:
        return 404, {
            "message": "Record Not Found",
            "errors": [{"resource": "Activity", "field": "streams", "code": "not found"}],
        }
    asked = [k.strip() for k in keys.split(",") if k.strip()] or ["time", "distance"]
    wanted = [k for k in KNOWN_TYPES if k in asked or k == "distance"]
    series = _series(activity)
    streams = {
        kind: {
            "data": series[kind],
            "series_type": "distance",
            "original_size": len(series[kind]),
            "resolution": "high",
        }
        for kind in wanted
        if kind in series
    }
    if key_by_type:
        return 200, streams
    return 200, [{"type": kind, **stream} for kind, stream in streams.items()]


def _series(activity: SandboxActivity) -> dict[str, list[Any]]:
    rng = random.Random(activity.activity_id)  # noqa: S311 - made-up samples, not secrets
    seconds = max(1, activity.elapsed_s)
    speed = activity.distance_m / seconds
    lat, lng = 47.3769, 8.5417
    out: dict[str, list[Any]] = {
        k: [] for k in ("time", "latlng", "distance", "altitude", "velocity_smooth")
    }
    out |= {"heartrate": [], "cadence": [], "moving": [], "grade_smooth": [], "temp": []}
    ride = "Ride" in activity.sport_type
    if ride:
        out["watts"] = []
    distance = 0.0
    for t in range(seconds + 1):
        v = max(0.0, speed * (1 + 0.08 * math.sin(t / 90) + rng.gauss(0, 0.03)))
        distance += v if t else 0.0
        heading = t / 600
        lat += v * math.cos(heading) / 111_320
        lng += v * math.sin(heading) / (111_320 * math.cos(math.radians(lat)))
        out["time"].append(t)
        out["latlng"].append([round(lat, 6), round(lng, 6)])
        out["distance"].append(round(distance, 1))
        out["altitude"].append(round(420 + 35 * math.sin(t / 700) + rng.gauss(0, 0.4), 1))
        out["velocity_smooth"].append(round(v, 3))
        out["heartrate"].append(round(138 + 18 * math.sin(t / 400) + rng.gauss(0, 2)))
        out["cadence"].append(round((84 if ride else 86) + rng.gauss(0, 3)))
        out["moving"].append(v > _MOVING_SPEED)
        out["grade_smooth"].append(round(2.5 * math.cos(t / 700) + rng.gauss(0, 0.2), 1))
        out["temp"].append(21 + (t // 1800) % 3)
        if ride:
            out["watts"].append(max(0, round(190 + 40 * math.sin(t / 120) + rng.gauss(0, 15))))
    return out
