"""Garmin list records -> GarminActivity: durations, types, starts, names.

The real answers and Garmin's type list are read in place from the realdata folder;
the expectations below were read off those files by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.domain.activity_types import is_indoor, sport_family
from garmin2strava.domain.text import MAX_NAME_CHARS, clean_description, clean_name, shown
from garmin2strava.domain.upload_rules import parse_activity
from garmin2strava.errors import InvalidActivity

GARMIN = Path("garmin")


def _records(realdata: Path, name: str) -> dict[int, dict[str, Any]]:
    rows = json.loads((realdata / GARMIN / name).read_text(encoding="utf-8"))
    return {row["activityId"]: row for row in rows}


# -- the real list answers ------------------------------------------------------------
# (file, activityId, start UTC, elapsed s, distance m, family, manual, indoor)
REAL = [
    (
        "activitylist_2018.json",
        2541953812,
        datetime(2018, 3, 8, 11, 23, 22, tzinfo=UTC),
        2627.3798828125,  # elapsedDuration 2627379.8828125 ms
        8225.5302734375,
        "ski",  # cross_country_skiing, filed under `other` (4) in 2018
        False,  # manualActivity absent
        False,
    ),
    (
        "activitylist_2021.json",
        6609987243,
        datetime(2021, 4, 15, 9, 44, 5, tzinfo=UTC),
        2702.589111328125,
        3385.43994140625,
        "walk",
        False,
        False,
    ),
    (
        "activitylist_2021.json",
        6588349056,  # multi_sport parent, beginTimestamp null
        datetime(2021, 4, 11, 9, 50, 49, tzinfo=UTC),
        11183.693120002747,
        38351.40899467468,
        "other",
        False,
        False,
    ),
    (
        "activitylist_2021.json",
        6585943400,  # elapsed 4677 s, longer than its timer time of 3459 s
        datetime(2021, 4, 11, 5, 48, 33, tzinfo=UTC),
        4677.15087890625,
        7287.759765625,
        "run",
        False,
        False,
    ),
    (
        "activitylist_2026_limit3.json",
        21482825013,  # startTimeLocal 08:10:21, startTimeGMT 14:10:21
        datetime(2026, 1, 8, 14, 10, 21, tzinfo=UTC),
        2225.44091796875,
        4261.18994140625,
        "run",
        False,
        False,
    ),
    (
        "activitylist_2026_limit3.json",
        21461718086,
        datetime(2026, 1, 6, 13, 14, 18, tzinfo=UTC),
        2349.037109375,
        3362.590087890625,
        "hike",
        False,
        False,
    ),
    (
        "activitylist_2026_limit3.json",
        21419635589,
        datetime(2026, 1, 2, 12, 12, 43, tzinfo=UTC),
        3227.382080078125,
        3196.52001953125,
        "other",  # stand_up_paddleboarding_v2 under water_sports
        False,
        False,
    ),
    (
        "activitylist_2026_start2_limit2.json",
        21413444039,  # elapsed 932.7 s, 2.4 times its timer time of 387.6 s
        datetime(2026, 1, 1, 17, 39, 43, tzinfo=UTC),
        932.6719970703125,
        263.32000732421875,
        "swim",
        False,
        False,
    ),
]


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "garmin_id", "start", "elapsed", "distance", "family", "manual", "indoor"), REAL
)
def test_real_list_answers_read_correctly(  # noqa: PLR0917  one column per field checked
    realdata: Path,
    name: str,
    garmin_id: int,
    start: datetime,
    elapsed: float,
    distance: float,
    family: str,
    manual: bool,
    indoor: bool,
) -> None:
    """Each real record of 2018, 2021 and 2026 gives its UTC start, its elapsed time in
    seconds (whether Garmin sent seconds or milliseconds), distance, family and flags."""
    activity = parse_activity(_records(realdata, name)[garmin_id])
    assert activity.start_utc == start
    assert activity.elapsed_seconds == pytest.approx(elapsed)
    assert activity.distance_m == pytest.approx(distance)
    assert activity.family == family
    assert activity.manual is manual
    assert activity.indoor is indoor


@pytest.mark.realdata
def test_every_real_record_is_read(realdata: Path) -> None:
    """No record of any real list answer is refused, and every elapsed time agrees with
    its timer time (`duration`) within a factor of 3, never a thousand."""
    names = sorted(p.name for p in (realdata / GARMIN).glob("activitylist_*.json"))
    assert len(names) == 4
    for name in names:
        for record in _records(realdata, name).values():
            activity = parse_activity(record)
            assert 1 <= activity.elapsed_seconds / record["duration"] < 3


# -- durations: the rules -----------------------------------------------------------------
def _record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "activityId": 7,
        "activityName": "Run",
        "activityType": {"typeId": 1, "typeKey": "running", "parentTypeId": 17},
        "startTimeGMT": "2026-03-01 07:00:00",
        "distance": 5000.0,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None or k == "beginTimestamp"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"elapsedDuration": 1800.5, "duration": 1700.0}, 1800.5),
        ({"elapsedDuration": 1800500.0, "duration": 1700.0}, 1800.5),
        ({"elapsedDuration": 1800500.0, "movingDuration": 1500.0}, 1800.5),
        ({"elapsedDuration": 1800500.0, "endTimeGMT": "2026-03-01 07:30:00"}, 1800.5),
        ({"elapsedDuration": 1800.0, "endTimeGMT": "2026-03-01 07:30:00"}, 1800.0),
        ({"elapsedDuration": 60000.0, "duration": 60.0}, 60.0),  # a one-minute activity
        ({"elapsedDuration": 3600.0, "duration": 600.0}, 3600.0),  # long pause: 6x
        (
            {
                "elapsedDuration": 1800500.0,
                "beginTimestamp": 1772348400000,
                "endTimestamp": 1772350200000,
            },
            1800.5,
        ),
        ({"duration": 1700.0}, 1700.0),
        ({"endTimeGMT": "2026-03-01 07:30:00", "duration": 1700.0}, 1800.0),
        ({"elapsedDuration": 1800.0}, 1800.0),  # nothing to check against: seconds
    ],
)
def test_elapsed_is_read_in_seconds_whatever_unit_came(
    fields: dict[str, Any], expected: float
) -> None:
    """elapsedDuration a thousand times its reference (span, timer or moving time) is
    milliseconds; one near its reference is seconds; absent, the reference is used."""
    assert parse_activity(_record(**fields)).elapsed_seconds == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "elapsedDuration"),
        ({"elapsedDuration": -5.0}, "elapsedDuration"),
        ({"elapsedDuration": float("nan")}, "elapsedDuration"),
        ({"elapsedDuration": 1e300}, "over"),
        ({"elapsedDuration": 2627379.88}, "over"),  # 30 days, no reference to tell ms
    ],
)
def test_bad_or_absurd_elapsed_is_refused_with_its_reason(
    fields: dict[str, Any], reason: str
) -> None:
    """No duration, a negative, NaN or week-long one: InvalidActivity naming it."""
    with pytest.raises(InvalidActivity, match=reason):
        parse_activity(_record(**fields))


# -- starts --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"startTimeGMT": "9999-12-31 23:59:59"},
        {"startTimeGMT": "0001-01-01 00:00:00"},
        {"startTimeGMT": None, "beginTimestamp": 2**62},
        {"startTimeGMT": None, "beginTimestamp": 253402300799000},  # 9999-12-31
        {"startTimeGMT": None, "beginTimestamp": -62135596800000},  # 0001-01-01
        {"beginTimestamp": 2**62},  # valid GMT, absurd timestamp beside it
        {"beginTimestamp": 1772348400000 + 86400000 * 400},  # a year away from GMT
        {"startTimeGMT": "soon"},
    ],
)
def test_implausible_start_is_refused(fields: dict[str, Any]) -> None:
    """Years 9999 and 0001, a huge or inconsistent beginTimestamp: InvalidActivity
    (skipped with its reason), never an OverflowError."""
    with pytest.raises(InvalidActivity, match="activity 7"):
        parse_activity(_record(elapsedDuration=1800.0, **fields))


def test_start_from_begin_timestamp_and_detail_format() -> None:
    """beginTimestamp (ms) stands in for a missing startTimeGMT; a null one (multisport
    parent) is fine; the detail answers' `2026-01-08T14:10:21.0` is read too."""
    by_begin = parse_activity(
        _record(startTimeGMT=None, beginTimestamp=1772348400000, elapsedDuration=60.0)
    )
    assert by_begin.start_utc == datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    null_begin = parse_activity(_record(beginTimestamp=None, elapsedDuration=60.0))
    assert null_begin.start_utc == datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    detail = parse_activity(_record(startTimeGMT="2026-01-08T14:10:21.0", elapsedDuration=60.0))
    assert detail.start_utc == datetime(2026, 1, 8, 14, 10, 21, tzinfo=UTC)


# -- activity types from Garmin's tree -------------------------------------------------
_ROOT_FAMILIES = {
    "running": "run",
    "cycling": "ride",
    "swimming": "swim",
    "walking": "walk",
    "hiking": "hike",
}


def _ancestors(types: dict[int, dict[str, Any]], entry: dict[str, Any]) -> list[str]:
    chain = [entry["typeKey"]]
    while entry.get("parentTypeId") in types:
        entry = types[entry["parentTypeId"]]
        chain.append(entry["typeKey"])
    return chain


@pytest.mark.realdata
def test_every_type_of_the_tree_has_its_ancestors_family(realdata: Path) -> None:
    """Each of Garmin's 152 types: under running a run, under cycling a ride (and so
    for swimming, walking, hiking); elsewhere none of these. The table alone (a ledger
    entry keeps only the typeKey) agrees with the record's parentTypeId."""
    listed = json.loads((realdata / GARMIN / "activityTypes_2026.json").read_text())
    types = {t["typeId"]: t for t in listed}
    assert len(types) == 152
    for entry in listed:
        chain = _ancestors(types, entry)
        expected = next((_ROOT_FAMILIES[k] for k in chain if k in _ROOT_FAMILIES), None)
        by_record = sport_family(
            entry["typeKey"], type_id=entry["typeId"], parent_type_id=entry.get("parentTypeId")
        )
        by_table = sport_family(entry["typeKey"])
        assert by_record == by_table, entry["typeKey"]
        if expected is not None:
            assert by_record == expected, chain
        else:
            assert by_record not in set(_ROOT_FAMILIES.values()), chain
        if "fitness_equipment" in chain:
            assert is_indoor(entry["typeKey"]), chain
            assert is_indoor(entry["typeKey"], parent_type_id=entry["parentTypeId"])


@pytest.mark.parametrize(
    ("type_key", "family"),
    [
        ("cyclocross", "ride"),
        ("e_bike_mountain", "ride"),
        ("e_bike_fitness", "ride"),
        ("enduro_mtb", "ride"),
        ("obstacle_run", "run"),
        ("ultra_run", "run"),
        ("treadmill_running", "run"),
        ("open_water_swimming", "swim"),
        ("rucking", "hike"),
        ("rowing_v2", "row"),
        ("wheelchair_push_run", "other"),  # para_sports, not the running family
        ("runToBikeTransition_v2", "other"),
    ],
)
def test_types_once_misread_by_substrings(type_key: str, family: str) -> None:
    """Rides once mapped to `other`, runs kept as runs, and `run` in a name that is
    no run."""
    assert sport_family(type_key) == family


def test_record_parent_decides_for_an_unknown_key() -> None:
    """A typeKey the table does not know takes its family from the record's parent,
    and its trainer flag from fitness_equipment."""
    assert sport_family("moon_running", type_id=999, parent_type_id=1) == "run"
    assert sport_family("moon_running") == "other"
    assert is_indoor("new_machine", parent_type_id=29)
    assert not is_indoor("new_outdoor_thing", parent_type_id=4)


@pytest.mark.parametrize(
    ("type_key", "indoor"),
    [
        ("treadmill_running", True),
        ("indoor_cycling", True),
        ("virtual_ride", True),
        ("lap_swimming", True),
        ("indoor_rowing", True),
        ("running", False),
        ("open_water_swimming", False),
        ("trail_running", False),
    ],
)
def test_trainer_flag(type_key: str, indoor: bool) -> None:
    """Machines, virtual courses and pools get Strava's trainer flag; outdoors not."""
    assert (
        parse_activity(_record(activityType={"typeKey": type_key}, elapsedDuration=60.0)).indoor
        is indoor
    )


# -- names ------------------------------------------------------------------------------
def test_names_lose_control_characters_and_are_bounded() -> None:
    """NUL, ESC sequences' ESC, CR/LF, C1 and bidi overrides go; a lone surrogate
    becomes U+FFFD; the name is at most MAX_NAME_CHARS long."""
    raw = "Morning\x00 \x1b[31mRun\r\nwith\x85 friends\u202e\ud800" + "x" * 400
    name = parse_activity(_record(activityName=raw, elapsedDuration=60.0)).name
    assert name.startswith("Morning [31mRun with friends\ufffd")
    assert len(name) == MAX_NAME_CHARS
    assert all(ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F for ch in name)
    assert clean_name("  Biel 🏛 Pavillon ") == "Biel 🏛 Pavillon"
    assert clean_name(None) == ""


def test_description_keeps_lines_and_loses_controls() -> None:
    """The Garmin description keeps its line breaks (CRLF -> LF) and loses controls."""
    assert clean_description("Felt good\r\n\x1b[2Jsplits: 5:01\x07") == "Felt good\n[2Jsplits: 5:01"
    record = _record(description="Hill reps\nx6", elapsedDuration=60.0)
    assert parse_activity(record).description == "Hill reps\nx6"
    assert parse_activity(_record(description=None, elapsedDuration=60.0)).description == ""


def test_shown_escapes_what_a_terminal_would_obey() -> None:
    """Text printed by the CLI shows ESC, CR and lone surrogates as escapes."""
    assert shown("a\x1b[2Jb\rc\ud800d") == "a\\x1b[2Jb\\rc\\ud800d"
    assert shown("Biel 🏛") == "Biel 🏛"
    shown("\ud800").encode("utf-8")  # encodable: no UnicodeEncodeError when printed
