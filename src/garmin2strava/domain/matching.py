"""Is this Garmin activity already on Strava? (DESIGN.md "Uploader", step 4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from garmin2strava.domain.activities import is_our_external_id, strava_sport_family
from garmin2strava.domain.models import GarminActivity, StravaActivity, Workout

__all__ = ["Match", "find_match", "workout_as_strava_activity"]

GARMIN_SYNC_PREFIXES = ("garmin_ping_", "garmin_push_")


@dataclass(frozen=True, slots=True)
class Match:
    strava_activity_id: int
    how: str  # "external_id" | "garmin_sync" | "start_time"


def find_match(
    activity: GarminActivity,
    candidates: Iterable[StravaActivity],
    *,
    tolerance_s: int,
) -> Match | None:
    """The Strava activity that is this Garmin activity, if any.

    Our own external_id wins; then a copy made by Garmin's own Strava sync
    (`garmin_ping_*`/`garmin_push_*`, whose number is not the Garmin id, so it is
    matched by start time); then any activity with the same start (within the
    tolerance), the same elapsed time (within max(60 s, 5 %)) and the same sport.
    """
    pool = list(candidates)
    for strava in pool:
        if is_our_external_id(strava.external_id, activity.activity_id):
            return Match(strava.activity_id, "external_id")
    near = [s for s in pool if _start_gap(activity, s) <= tolerance_s]
    near.sort(key=lambda s: _start_gap(activity, s))
    for strava in near:
        if (strava.external_id or "").startswith(GARMIN_SYNC_PREFIXES):
            return Match(strava.activity_id, "garmin_sync")
    for strava in near:
        if _elapsed_agrees(activity, strava) and _sport_agrees(activity, strava):
            return Match(strava.activity_id, "start_time")
    return None


def _start_gap(activity: GarminActivity, strava: StravaActivity) -> float:
    return abs((strava.start_utc - activity.start_utc).total_seconds())


def _elapsed_agrees(activity: GarminActivity, strava: StravaActivity) -> bool:
    allowed = max(60.0, 0.05 * activity.elapsed_seconds)
    return abs(strava.elapsed_seconds - activity.elapsed_seconds) <= allowed


def _sport_agrees(activity: GarminActivity, strava: StravaActivity) -> bool:
    return activity.family == strava_sport_family(strava.sport_type)


def workout_as_strava_activity(workout: Workout) -> StravaActivity:
    """Mirror rows take part in matching like listed activities."""
    return StravaActivity(
        activity_id=workout.activity_id,
        athlete_id=workout.athlete_id,
        name=workout.name,
        sport_type=workout.sport_type,
        start_utc=workout.start_date,
        elapsed_seconds=workout.elapsed_time,
        moving_seconds=workout.moving_time,
        distance_m=workout.distance,
        total_elevation_gain=workout.total_elevation_gain,
        external_id=workout.external_id,
        upload_id=workout.upload_id,
        private=workout.is_private,
        manual=False,
    )
