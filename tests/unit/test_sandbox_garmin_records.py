"""The Garmin emulator's records have the shapes of real Garmin answers, and the
daemon's record parser reads every shape the emulator serves by default."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_sandbox.garmin import make_record
from garmin2strava.domain.upload_rules import parse_activity

START = datetime(2026, 1, 8, 14, 10, 21, tzinfo=UTC)


def _local_offset(record: dict[str, object]) -> timedelta:
    fmt = "%Y-%m-%d %H:%M:%S"
    local = datetime.strptime(str(record["startTimeLocal"]), fmt)  # noqa: DTZ007 - wall time
    gmt = datetime.strptime(str(record["startTimeGMT"]), fmt)  # noqa: DTZ007 - UTC by name
    return local - gmt


def test_local_time_is_offset_from_gmt_per_activity() -> None:
    """startTimeLocal differs from startTimeGMT, by a zone that varies between activities."""
    offsets = {_local_offset(make_record(n, "r", "running", START, 60, 100)) for n in range(6)}
    assert timedelta(0) not in offsets
    assert len(offsets) >= 2
    fixed = make_record(1, "r", "running", START, 60, 100, utc_offset_h=5.5)
    assert _local_offset(fixed) == timedelta(hours=5, minutes=30)


def test_2026_shape_leaves_null_fields_out() -> None:
    """2026 answers omit nulls: no description unless there is one, no device on manual."""
    plain = make_record(1, "r", "running", START, 60, 100)
    assert "description" not in plain
    assert plain["manualActivity"] is False
    assert plain["elapsedDuration"] == 60
    manual = make_record(2, "m", "running", START, 60, None, manual=True, description="Felt ok")
    assert manual["description"] == "Felt ok"
    assert {"deviceId", "manufacturer", "distance"}.isdisjoint(manual)


@pytest.mark.parametrize("shape", ["2021", "2018"])
def test_older_shapes_carry_milliseconds_and_nulls(shape: str) -> None:
    """2018 and 2021 give elapsedDuration in ms, a null description; 2018 no manualActivity."""
    record = make_record(1, "r", "running", START, 2627.38, 8225.5, shape=shape)  # type: ignore[arg-type]  # the parametrized literal
    assert record["elapsedDuration"] == pytest.approx(2627380.0)
    assert record["duration"] == 2627.38
    assert "description" in record
    assert record["description"] is None
    assert ("manualActivity" in record) is (shape == "2021")


def test_multisport_parent_has_no_begin_timestamp() -> None:
    """A multi_sport parent has beginTimestamp null and is marked as a parent."""
    record = make_record(6588349056, "Tri", "multi_sport", START, 10226.4, 38351.4, shape="2021")
    assert record["beginTimestamp"] is None
    assert record["parent"] is True
    assert record["activityType"] == {"typeId": 89, "typeKey": "multi_sport", "parentTypeId": 17}


@pytest.mark.parametrize(
    ("type_key", "ids"),
    [("trail_running", (6, 1)), ("cyclocross", (19, 2)), ("lap_swimming", (27, 26))],
)
def test_type_ids_are_garmins(type_key: str, ids: tuple[int, int]) -> None:
    """activityType carries Garmin's typeId and parentTypeId for the key."""
    kind = make_record(1, "r", type_key, START, 60, 100)["activityType"]
    assert (kind["typeId"], kind["parentTypeId"]) == ids


@pytest.mark.realdata
def test_type_ids_match_garmins_type_list(realdata: Path) -> None:
    """Every type id the emulator knows is the one in Garmin's own type list."""
    real = json.loads((realdata / "garmin" / "activityTypes_2026.json").read_text("utf-8"))
    by_key = {t["typeKey"]: (t["typeId"], t["parentTypeId"]) for t in real}
    from g2s_sandbox.garmin import _TYPE_IDS

    assert {k: v for k, v in _TYPE_IDS.items() if by_key.get(k) != v} == {}


@pytest.mark.realdata
def test_2026_record_has_the_real_answers_keys(realdata: Path) -> None:
    """Each key of a default record appears in the real 2026 list answer."""
    real = json.loads((realdata / "garmin" / "activitylist_2026_limit3.json").read_text("utf-8"))
    record = make_record(1, "r", "trail_running", START, 2225.4, 4261.2, description="x")
    assert set(record) - set(real[0]) == {"description"}  # absent there: it had none


@pytest.mark.parametrize("manual", [False, True])
def test_domain_parser_reads_the_default_shape(manual: bool) -> None:
    """parse_activity reads a default record: UTC start, seconds, distance, manual flag."""
    record = make_record(21482825013, "Base", "trail_running", START, 2225.4, 4261.2, manual)
    activity = parse_activity(record)
    assert activity.start_utc == START
    assert activity.elapsed_seconds == 2225.4
    assert activity.manual is manual
    assert activity.type_key == "trail_running"
