"""The Garmin emulator serves real-shaped list and detail answers over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from g2s_sandbox.garmin import GarminSandbox, make_record

pytestmark = pytest.mark.integration

START = datetime(2018, 3, 8, 11, 23, 22, tzinfo=UTC)


@pytest.fixture
def garmin() -> Iterator[GarminSandbox]:
    with GarminSandbox() as sandbox:
        yield sandbox


def _get(garmin: GarminSandbox, path: str) -> Any:
    token = json.loads(garmin.issue_tokens())["di_token"]
    answer = requests.get(
        f"{garmin.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_detail_times_and_seconds_as_garmin_gives_them(garmin: GarminSandbox) -> None:
    """The detail has times like 2018-03-08T11:23:22.0 and elapsed in seconds, even
    when the list record of that era gives milliseconds."""
    record = make_record(2541953812, "Ski", "running", START, 2627.38, 8225.5, shape="2018")
    record["description"] = "Skating"
    garmin.add_activity(record, b"zip", original_name="2541953812.zip")
    detail = _get(garmin, "/activity-service/activity/2541953812")
    summary = detail["summaryDTO"]
    assert summary["startTimeGMT"] == "2018-03-08T11:23:22.0"
    assert summary["startTimeLocal"] == record["startTimeLocal"].replace(" ", "T") + ".0"
    assert summary["startTimeLocal"] != summary["startTimeGMT"]
    assert summary["elapsedDuration"] == pytest.approx(2627.38)
    assert detail["description"] == "Skating"
    assert detail["metadataDTO"]["manualActivity"] is False


def test_list_orders_a_multisport_parent_without_begin_timestamp(garmin: GarminSandbox) -> None:
    """A multisport parent (beginTimestamp null) is listed by its start, newest first."""
    garmin.add_activity(make_record(1, "Run", "running", START, 60, 100), b"zip")
    parent = make_record(2, "Tri", "multi_sport", START + timedelta(hours=1), 600, 900)
    garmin.add_activity(parent, b"zip")
    garmin.add_activity(make_record(3, "Walk", "walking", START - timedelta(hours=1), 60, 50), None)
    rows = _get(garmin, "/activitylist-service/activities/search/activities?start=0&limit=10")
    assert [r["activityId"] for r in rows] == [2, 1, 3]
    assert rows[0]["beginTimestamp"] is None
