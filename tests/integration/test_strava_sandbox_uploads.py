"""The Strava emulator judges uploaded files itself, over HTTP, as Strava does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from g2s_sandbox import fitgen
from g2s_sandbox.activity_files import MALFORMED, NO_TIME
from g2s_sandbox.strava import StravaSandbox
from g2s_sandbox.strava_records import ERROR, READY

pytestmark = pytest.mark.integration

ATHLETE = 77
START = datetime(2025, 6, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[StravaSandbox]:
    with StravaSandbox() as running:
        running.add_athlete(ATHLETE)
        yield running


def _upload(sandbox: StravaSandbox, data: bytes, data_type: str, name: str) -> dict[str, Any]:
    """POST the file, then GET its status once (the emulator settles on every request)."""
    token, _ = sandbox.issue_access_token(ATHLETE)
    auth = {"Authorization": f"Bearer {token}"}
    posted = requests.post(
        f"{sandbox.base_url}/api/v3/uploads",
        headers=auth,
        data={"data_type": data_type, "external_id": name},
        files={"file": (f"{name}.{data_type}", data)},
        timeout=30,
    )
    assert posted.status_code == 201, posted.text
    status = requests.get(
        f"{sandbox.base_url}/api/v3/uploads/{posted.json()['id']}", headers=auth, timeout=30
    )
    answer: dict[str, Any] = status.json()
    return answer


def test_chained_fit_becomes_one_activity(sandbox: StravaSandbox) -> None:
    """An activity with a chained HR segment (as a swim watch writes) lands as one activity."""
    run = fitgen.build_activity_fit(start_utc=START, duration_s=900, distance_m=3000.0)
    hr_segment = fitgen.build_activity_fit(start_utc=START, duration_s=30)
    answer = _upload(sandbox, run + hr_segment, "fit", "chained")
    assert (answer["status"], answer["error"]) == (READY, None)
    activity = sandbox.activities[answer["activity_id"]]
    assert (activity.start_utc, activity.elapsed_s, activity.sport_type) == (START, 900, "Run")
    assert activity.distance_m == pytest.approx(3000.0)


@pytest.mark.parametrize(
    ("build", "data_type", "error"),
    [
        (lambda: fitgen.corrupt_crc(fitgen.build_activity_fit(start_utc=START, duration_s=60)),
         "fit", MALFORMED),
        (lambda: fitgen.truncate(fitgen.build_activity_fit(start_utc=START, duration_s=60), 400),
         "fit", MALFORMED),
        (lambda: b'<gpx><rte><rtept lat="45" lon="13"/></rte></gpx>', "gpx", NO_TIME),
        (lambda: fitgen.build_activity_fit(
            start_utc=fitgen.FIT_EPOCH + timedelta(days=3), duration_s=60), "fit", NO_TIME),
    ],
    ids=["bad-crc", "truncated", "gpx-route-no-times", "fit-relative-times"],
)  # fmt: skip
def test_unusable_files_refused_with_strava_wording(
    sandbox: StravaSandbox, build: Any, data_type: str, error: str
) -> None:
    """Corrupt and untimed files end as upload errors in Strava's words; no activity."""
    answer = _upload(sandbox, build(), data_type, "bad")
    assert (answer["status"], answer["error"], answer["activity_id"]) == (ERROR, error, None)
    assert sandbox.activities == {}
    assert sandbox.refusals[answer["id"]]  # the reason, for whoever reads a failing test


def test_same_start_twice_is_a_duplicate(sandbox: StravaSandbox) -> None:
    """The second upload with the same start is Strava's duplicate error naming the first."""
    fit = fitgen.build_activity_fit(start_utc=START, duration_s=120)
    first = _upload(sandbox, fit, "fit", "one")
    gpx = fitgen.build_gpx(start_utc=START, duration_s=120)
    second = _upload(sandbox, gpx, "gpx", "two")
    assert second["status"] == ERROR
    assert second["error"] == f"two.gpx duplicate of activity {first['activity_id']}"


@pytest.mark.realdata
def test_real_chained_swim_lands_once(sandbox: StravaSandbox, realdata: Path) -> None:
    """A real Forerunner 935 swim with six chained HR segments becomes one Swim activity."""
    answer = _upload(
        sandbox, (realdata / "fit" / "garmin-fr935-cr.fit").read_bytes(), "fit", "swim"
    )
    assert answer["status"] == READY
    activity = sandbox.activities[answer["activity_id"]]
    assert activity.sport_type == "Swim"
    assert activity.start_utc == datetime(2018, 3, 24, 11, 2, 35, tzinfo=UTC)
    assert len(sandbox.activities) == 1
