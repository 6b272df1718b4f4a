"""Which Strava gear a Garmin activity's gear is: the `G2S_GEAR_MAP` setting, Garmin's
gear records, the athlete's Strava gear, and the match between them. Pure.

Garmin tells the gear of one activity (`/gear-service/gear/filterGear?activityId=`:
a list of gear records with `uuid`, `displayName`, `customMakeModel`, `gearMakeName`,
`gearModelName`, `gearTypeName`); Strava lists the athlete's `shoes` and `bikes`
(`GET /athlete`: `id` like `g123`/`b456`, `name`). The map wins; otherwise names are
compared ignoring case and spacing, the Garmin display name first, then the custom
make and model. Gear that matches nothing leaves Strava's default in place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GarminGear",
    "GearChoice",
    "StravaGear",
    "choose_gear",
    "garmin_gear_from_json",
    "gear_key",
    "parse_gear_map",
    "strava_gear_from_athlete",
    "strava_gear_from_plain",
    "strava_gear_to_plain",
]

# Strava's gear ids: `g` (shoes) or `b` (bikes) and digits.
_STRAVA_GEAR_ID = re.compile(r"[bg][0-9]{1,18}")
_SPACES = re.compile(r"\s+")
_MAX_MAP = 2000  # characters: a setting, not a database
# Which Garmin gear type goes with which activity family, when an activity lists more
# than one piece (shoes and a bike): the matching kind is tried first.
_KIND_OF_FAMILY = {"run": "shoes", "walk": "shoes", "hike": "shoes", "ride": "bike"}


def gear_key(name: str) -> str:
    """What two gear names are compared by: case and spacing ignored."""
    return _SPACES.sub("", name).casefold()


@dataclass(frozen=True, slots=True)
class GarminGear:
    """One piece of Garmin gear linked to an activity."""

    uuid: str
    display_name: str
    custom_make_model: str
    make_model: str  # "gearMakeName gearModelName"
    type_name: str  # Garmin's `gearTypeName`: "Shoes", "Bike", ...

    @property
    def label(self) -> str:
        """The name Garmin shows for it (`displayName` may be null)."""
        return self.display_name or self.custom_make_model or self.make_model or self.uuid


@dataclass(frozen=True, slots=True)
class StravaGear:
    gear_id: str
    name: str


@dataclass(frozen=True, slots=True)
class GearChoice:
    """The Strava gear to set (None: leave Strava's default), its name, and the Garmin
    gear that matched nothing ("" when there was none or it matched)."""

    gear_id: str | None
    name: str = ""
    unmapped: str = ""
    needs_strava_gear: bool = False  # the map did not decide: the athlete's gear is needed


def parse_gear_map(text: str) -> dict[str, str]:
    """`Garmin name or uuid=Strava gear id` entries separated by `;` -> {gear_key: id}.
    Raises ValueError with one line naming the entry at fault."""
    if len(text) > _MAX_MAP:
        msg = f"longer than {_MAX_MAP} characters"
        raise ValueError(msg)
    mapping: dict[str, str] = {}
    for raw in text.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        garmin, sep, strava = entry.rpartition("=")
        garmin, strava = garmin.strip(), strava.strip()
        if not sep or not garmin:
            msg = f"entry {entry!r} is not 'Garmin name or uuid=Strava gear id'"
            raise ValueError(msg)
        if not _STRAVA_GEAR_ID.fullmatch(strava):
            msg = f"entry {entry!r}: {strava!r} is not a Strava gear id (like g123 or b456)"
            raise ValueError(msg)
        key = gear_key(garmin)
        if key in mapping and mapping[key] != strava:
            msg = f"entry {entry!r}: {garmin!r} is mapped twice"
            raise ValueError(msg)
        mapping[key] = strava
    return mapping


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def garmin_gear_from_json(body: Any) -> list[GarminGear]:
    """Garmin's answer for one activity (a list of gear records); what is not a record
    with a uuid or a name is left out."""
    rows = body if isinstance(body, list) else []
    found: list[GarminGear] = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        make_model = f"{_text(row.get('gearMakeName'))} {_text(row.get('gearModelName'))}"
        gear = GarminGear(
            uuid=_text(row.get("uuid")),
            display_name=_text(row.get("displayName")),
            custom_make_model=_text(row.get("customMakeModel")),
            make_model=make_model.strip(),
            type_name=_text(row.get("gearTypeName")),
        )
        if gear.uuid or gear.display_name or gear.custom_make_model:
            found.append(gear)
    return found


def strava_gear_from_athlete(body: Any) -> list[StravaGear]:
    """The athlete's shoes and bikes from `GET /athlete`."""
    if not isinstance(body, Mapping):
        return []
    found: list[StravaGear] = []
    for kind in ("shoes", "bikes"):
        rows = body.get(kind)
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, Mapping):
                continue
            gear_id, name = _text(row.get("id")), _text(row.get("name"))
            if _STRAVA_GEAR_ID.fullmatch(gear_id) and name:
                found.append(StravaGear(gear_id, name))
    return found


def strava_gear_to_plain(gear: Sequence[StravaGear]) -> list[dict[str, str]]:
    return [{"id": g.gear_id, "name": g.name} for g in gear]


def strava_gear_from_plain(rows: Any) -> list[StravaGear]:
    return strava_gear_from_athlete({"shoes": rows if isinstance(rows, list) else []})


def _in_family_order(garmin: Sequence[GarminGear], family: str) -> list[GarminGear]:
    kind = _KIND_OF_FAMILY.get(family, "")
    return sorted(garmin, key=lambda g: 0 if kind and gear_key(g.type_name) == kind else 1)


def choose_gear(
    garmin: Sequence[GarminGear],
    gear_map: Mapping[str, str],
    strava: Sequence[StravaGear] | None,
    *,
    family: str = "",
) -> GearChoice:
    """The Strava gear for an activity whose Garmin gear is `garmin`.

    `strava` None means the athlete's gear was not read: when the map decides nothing
    the answer says it is needed (`needs_strava_gear`)."""
    if not garmin:
        return GearChoice(None)
    ordered = _in_family_order(garmin, family)
    names = {g.gear_id: g.name for g in strava or ()}
    for gear in ordered:
        for key in (gear.uuid, gear.display_name, gear.custom_make_model):
            mapped = gear_map.get(gear_key(key)) if key else None
            if mapped is not None:
                return GearChoice(mapped, names.get(mapped, mapped))
    if strava is None:
        return GearChoice(None, needs_strava_gear=True)
    by_name = {gear_key(g.name): g for g in strava}
    for gear in ordered:
        for name in (gear.display_name, gear.custom_make_model):
            found = by_name.get(gear_key(name)) if name else None
            if found is not None:
                return GearChoice(found.gear_id, found.name)
    return GearChoice(None, unmapped=", ".join(g.label for g in ordered))
