"""Garmin activity types -> the sport families matching compares, and the trainer flag.

Garmin files every type under a parent in one tree (`activityType.typeId` and
`parentTypeId`; its root is `all`). The families here follow that tree: every type
under `running` is a run, under `cycling` a ride, and so on. A list record carries
its own `parentTypeId`, which decides where it names one of those family roots; the
table below (written from Garmin's type list, and from older keys still found in old
answers) decides for the other records and for ledger entries, which keep only the
typeKey.
"""

from __future__ import annotations

import re

__all__ = [
    "FAMILIES",
    "FAMILY_ROOT_TYPE_IDS",
    "FITNESS_EQUIPMENT_TYPE_ID",
    "is_indoor",
    "normalize_type_key",
    "sport_family",
    "strava_sport_family",
]

_SUFFIX = re.compile(r"_v\d+$")

# Garmin's typeIds of the family roots (stable across the 2018, 2021 and 2026 answers).
FAMILY_ROOT_TYPE_IDS: dict[int, str] = {
    1: "run",  # running
    2: "ride",  # cycling
    3: "hike",  # hiking
    9: "walk",  # walking
    26: "swim",  # swimming
}
# `fitness_equipment`: gym and machine activities, uploaded with the trainer flag.
FITNESS_EQUIPMENT_TYPE_ID = 29

FAMILIES = ("run", "ride", "swim", "walk", "hike", "row", "ski", "other")

_TYPE_FAMILIES: dict[str, str] = {
    # running (typeId 1) and its children
    "running": "run",
    "indoor_running": "run",
    "obstacle_run": "run",
    "street_running": "run",
    "track_running": "run",
    "trail_running": "run",
    "treadmill_running": "run",
    "ultra_run": "run",
    "virtual_run": "run",
    # cycling (typeId 2) and its children
    "cycling": "ride",
    "bmx": "ride",
    "cyclocross": "ride",
    "downhill_biking": "ride",
    "e_bike_fitness": "ride",
    "e_bike_mountain": "ride",
    "e_enduro_mtb": "ride",
    "enduro_mtb": "ride",
    "gravel_cycling": "ride",
    "hand_cycling": "ride",
    "indoor_cycling": "ride",
    "indoor_hand_cycling": "ride",
    "mountain_biking": "ride",
    "recumbent_cycling": "ride",
    "road_biking": "ride",
    "track_cycling": "ride",
    "virtual_ride": "ride",
    # swimming (typeId 26)
    "swimming": "swim",
    "lap_swimming": "swim",
    "open_water_swimming": "swim",
    # walking (typeId 9)
    "walking": "walk",
    "casual_walking": "walk",
    "speed_walking": "walk",
    # hiking (typeId 3)
    "hiking": "hike",
    "rucking": "hike",
    # rowing: `rowing_v2` under water_sports, `indoor_rowing` under fitness_equipment
    "rowing": "row",
    "indoor_rowing": "row",
    # skiing and snowboarding under winter_sports; the keys without `_ws` are older
    # answers' (2018: `cross_country_skiing`, typeId 81, filed under `other`)
    "backcountry_skiing": "ski",
    "backcountry_snowboarding": "ski",
    "backcountry_skiing_snowboarding": "ski",
    "backcountry_skiing_snowboarding_ws": "ski",
    "cross_country_skiing": "ski",
    "cross_country_skiing_ws": "ski",
    "resort_skiing": "ski",
    "resort_snowboarding": "ski",
    "resort_skiing_snowboarding": "ski",
    "resort_skiing_snowboarding_ws": "ski",
    "skate_skiing": "ski",
    "skate_skiing_ws": "ski",
}

# Recorded on a machine, a virtual course or in a pool: Strava's trainer flag. Every
# child of fitness_equipment (typeId 29) is one; unknown keys under it are too.
_INDOOR: frozenset[str] = frozenset(
    {
        "indoor_running",
        "treadmill_running",
        "virtual_run",
        "indoor_cycling",
        "indoor_hand_cycling",
        "virtual_ride",
        "lap_swimming",
        "indoor_walking",  # older answers
        # fitness_equipment's children
        "fitness_equipment",
        "bouldering",
        "dance",
        "elliptical",
        "hiit",
        "indoor_cardio",
        "indoor_climbing",
        "indoor_rowing",
        "jump_rope",
        "mobility",
        "onshore_grinding",
        "pilates",
        "stair_climbing",
        "strength_training",
        "yoga",
    }
)

_STRAVA_FAMILIES: dict[str, str] = {
    "Run": "run",
    "TrailRun": "run",
    "VirtualRun": "run",
    "Ride": "ride",
    "MountainBikeRide": "ride",
    "GravelRide": "ride",
    "EBikeRide": "ride",
    "EMountainBikeRide": "ride",
    "VirtualRide": "ride",
    "Velomobile": "ride",
    "Handcycle": "ride",
    "Swim": "swim",
    "Walk": "walk",
    "Hike": "hike",
    "Rowing": "row",
    "VirtualRow": "row",
    "AlpineSki": "ski",
    "BackcountrySki": "ski",
    "NordicSki": "ski",
    "Snowboard": "ski",
}


def normalize_type_key(type_key: str) -> str:
    """`stand_up_paddleboarding_v2` -> `stand_up_paddleboarding`."""
    return _SUFFIX.sub("", type_key.strip().lower())


def sport_family(
    type_key: str, *, type_id: int | None = None, parent_type_id: int | None = None
) -> str:
    """One of FAMILIES. The record's parent decides where it is a family root; then
    the table; then the type's own id (a family root itself); else "other"."""
    by_parent = FAMILY_ROOT_TYPE_IDS.get(parent_type_id) if parent_type_id is not None else None
    if by_parent is not None:
        return by_parent
    known = _TYPE_FAMILIES.get(normalize_type_key(type_key))
    if known is not None:
        return known
    by_id = FAMILY_ROOT_TYPE_IDS.get(type_id) if type_id is not None else None
    return by_id or "other"


def is_indoor(type_key: str, *, parent_type_id: int | None = None) -> bool:
    """Uploaded with Strava's trainer flag (no GPS track to speak of)."""
    key = normalize_type_key(type_key)
    if key in _INDOOR or parent_type_id == FITNESS_EQUIPMENT_TYPE_ID:
        return True
    # A key the table does not know yet: Garmin names its indoor variants so.
    return key not in _TYPE_FAMILIES and key.startswith(("indoor_", "virtual_"))


def strava_sport_family(sport_type: str) -> str:
    return _STRAVA_FAMILIES.get(sport_type, "other")
