"""The rules of an upload's finish on Strava (issue 21): Garmin's gear records, the
gear map and the match by name, the hide rules, and the finish's states (owed,
applied, failed; the rename carry's answers). Pure: no store, no request."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.domain.feed_rules import hiding_rule, parse_hide_rules
from garmin2strava.domain.gear import (
    GarminGear,
    StravaGear,
    choose_gear,
    garmin_gear_from_json,
    parse_gear_map,
    strava_gear_from_athlete,
)
from garmin2strava.domain.models import GarminActivity
from garmin2strava.domain.strava_finish import ActivityUpdate, StravaFinish, rename_step

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# A real filterGear record (the Garmin brief's), whose displayName is null.
REAL_GARMIN_GEAR = {
    "gearPk": 39917352,
    "uuid": "4f5119d6a65d47b9bb235904f9ff927b",
    "userProfilePk": 95677586,
    "gearMakeName": "Other",
    "gearModelName": "Unknown Shoes",
    "gearTypeName": "Shoes",
    "gearStatusName": "active",
    "displayName": None,
    "customMakeModel": "Giro Sector",
}


def _gear(name: str, *, kind: str = "Shoes", uuid: str = "") -> GarminGear:
    return GarminGear(uuid or name.lower(), name, "", "", kind)


RUN = GarminActivity(
    activity_id=1,
    name="Run",
    type_key="running",
    start_utc=NOW,
    elapsed_seconds=1800.0,
    distance_m=5000.0,
    manual=False,
    family="run",
    indoor=False,
)


def _run(**fields: Any) -> GarminActivity:
    return replace(RUN, **fields)


def test_a_real_garmin_gear_record_is_read_and_matched_by_its_custom_make_model() -> None:
    [gear] = garmin_gear_from_json([REAL_GARMIN_GEAR, "junk", {"gearPk": 1}])
    assert (gear.uuid, gear.display_name, gear.custom_make_model, gear.label) == (
        "4f5119d6a65d47b9bb235904f9ff927b",
        "",
        "Giro Sector",
        "Giro Sector",
    )
    choice = choose_gear([gear], {}, [StravaGear("g7", "giro  SECTOR")])
    assert (choice.gear_id, choice.name) == ("g7", "giro  SECTOR")


def test_stravas_recorded_athlete_gives_its_shoes_and_bikes() -> None:
    """stravalib's own recorded athlete (its tests/resources/athlete.3.json)."""
    spec = importlib.util.find_spec("stravalib")
    assert spec is not None
    assert spec.origin is not None
    recorded = Path(spec.origin).parent / "tests" / "resources" / "athlete.3.json"
    gear = strava_gear_from_athlete(json.loads(recorded.read_text()))
    assert [g.gear_id for g in gear] == ["g69911", "b55763", "b809124", "b58057", "b979998"]
    assert gear[0].name == "Salomon XT Wings 2"


def test_the_map_wins_by_uuid_or_name_and_then_names_are_compared() -> None:
    strava = [StravaGear("g1", "Pegasus 41"), StravaGear("b2", "Bike")]
    pegasus = _gear("Pegasus 41", uuid="ABC")
    assert choose_gear([pegasus], parse_gear_map("abc=g9"), strava).gear_id == "g9"
    assert choose_gear([pegasus], parse_gear_map("pegasus41=g8"), None).gear_id == "g8"
    assert choose_gear([pegasus], {}, strava).gear_id == "g1"
    assert choose_gear([pegasus], {}, None).needs_strava_gear
    unmatched = choose_gear([_gear("Old boots")], {}, strava)
    assert (unmatched.gear_id, unmatched.unmapped) == (None, "Old boots")
    assert choose_gear([], {}, None) == choose_gear([], {}, strava)  # no gear: nothing


def test_the_gear_of_the_activitys_kind_is_tried_first() -> None:
    strava = [StravaGear("g1", "Shoe"), StravaGear("b2", "Bike")]
    both = [_gear("Shoe"), _gear("Bike", kind="Bike")]
    assert choose_gear(both, {}, strava, family="ride").gear_id == "b2"
    assert choose_gear(both, {}, strava, family="run").gear_id == "g1"


@pytest.mark.parametrize(
    ("rules", "run", "hidden_by"),
    [
        ("indoor", _run(indoor=True), "indoor"),
        ("indoor", _run(), ""),
        ("type:Treadmill_Running_v2", _run(type_key="treadmill_running"), "type:treadmill_running"),
        ("under:5.5km", _run(distance_m=5000.0), "under:5.5km"),
        ("under:5km", _run(distance_m=5000.0), ""),
        ("under:5km", _run(distance_m=None), ""),
        ("under:31min", _run(), "under:31min"),
        ("under:30min", _run(), ""),
        ("under:31min", _run(elapsed_seconds=0.0), ""),  # unknown is not short
        ("under:1km, indoor", _run(indoor=True), "indoor"),
        ("", _run(indoor=True), ""),
    ],
)
def test_hide_rules(rules: str, run: GarminActivity, hidden_by: str) -> None:
    assert hiding_rule(parse_hide_rules(rules), run) == hidden_by


def test_a_finish_owes_applies_and_fails_with_growing_waits_then_gives_up() -> None:
    planned = StravaFinish(name_set="Run").owing(ActivityUpdate(gear_id="g1"))
    assert planned.owing(ActivityUpdate()).owed == ActivityUpdate(gear_id="g1")
    assert StravaFinish().owing(ActivityUpdate()).owed is None  # nothing to send
    first = planned.failed("503", now=NOW, max_attempts=3)
    second = first.failed("503", now=NOW, max_attempts=3)
    assert first.retry_at == NOW + timedelta(minutes=2)
    assert second.retry_at == NOW + timedelta(minutes=4)
    assert not first.due(NOW)
    assert first.due(NOW + timedelta(minutes=2))
    given_up = second.failed("503", now=NOW, max_attempts=3)
    assert (given_up.owed, given_up.error, given_up.due(NOW)) == (None, "503", False)
    applied = first.owing(ActivityUpdate(name="Tempo")).applied()
    assert (applied.owed, applied.gear_id, applied.name_set, applied.name_carried) == (
        None,
        "g1",
        "Tempo",
        True,
    )
    assert StravaFinish.from_plain(json.loads(json.dumps(applied.to_plain()))) == applied
    assert StravaFinish.from_plain(None) is None


@pytest.mark.parametrize(
    ("garmin", "finish", "strava", "action"),
    [
        ("New", StravaFinish(name_set="Old"), "Old", "carry"),
        ("New", StravaFinish(name_set="Old"), "Edited on Strava", "keep"),
        ("New", StravaFinish(name_set="Old"), None, "wait"),
        ("Old", StravaFinish(name_set="Old"), "Old", "none"),
        ("New", StravaFinish(name_set="Old", strava_name_kept=True), "Old", "none"),
        ("", StravaFinish(name_set="Old"), "Old", "none"),
        ("New", StravaFinish(name_set="Old").owing(ActivityUpdate(name="New")), "Old", "none"),
    ],
)
def test_the_rename_carry(
    garmin: str, finish: StravaFinish, strava: str | None, action: str
) -> None:
    assert rename_step(garmin, finish, strava).action == action
