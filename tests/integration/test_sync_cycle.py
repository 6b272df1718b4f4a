"""The sync cycle end to end: the real app (bootstrap, SQLite store, garminconnect,
stravalib) against both sandboxes on loopback, measured by the sandboxes' request
counters. Failure paths (retries, backoffs, budgets, auth) are in
test_sync_failures.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.fitgen import (
    build_activity_fit,
    corrupt_crc,
    not_a_zip,
    truncate,
    wrong_header,
    zip_absolute_path,
    zip_bomb,
    zip_no_activity,
    zip_original,
    zip_symlink,
    zip_too_many_members,
    zip_traversal,
)
from g2s_sandbox.garmin import make_record
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.bootstrap import App
from garmin2strava.domain.models import LedgerEntry, UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import Settings

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


# -- harness (fixtures pair, open_app, make_app: conftest.py) -----------------------------
def cycle(app: App, *, dry_run: bool = False) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps, dry_run=dry_run)
    return report


def ledger(app: App, garmin_id: int) -> LedgerEntry:
    entry = app.store.get_uploads(USER, [garmin_id]).get(garmin_id)
    assert entry is not None, f"no ledger entry for {garmin_id}"
    return entry


def strava_ids_with_external_id(pair: SandboxPair, external_id: str) -> list[int]:
    with pair.strava.lock:
        return [
            a.activity_id for a in pair.strava.activities.values() if a.external_id == external_id
        ]


# -- idle cycles ---------------------------------------------------------------------------
def test_first_cycle_with_nothing_new_makes_no_strava_request(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A brand-new account whose Garmin list holds no run: 1 Garmin request, 0 Strava
    requests (not even a token refresh)."""
    seed_run(pair, 100, start_utc=START, type_key="road_biking", name="Ride")
    app = make_app()

    report = cycle(app)

    assert report.ok
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0
    tokens = app.store.get_strava_tokens(USER)
    assert tokens is not None
    assert tokens.access_token == ""  # still the bootstrap token: never refreshed


def test_idle_cycle_after_everything_settled(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Once the runs are settled, a cycle makes exactly 1 Garmin request and 0 Strava."""
    seed_run(pair, 101, start_utc=START)
    seed_run(pair, 102, start_utc=START + HOUR, type_key="trail_running")
    app = make_app()
    assert cycle(app).outcomes["uploaded"] == 2
    pair.reset_counts()

    report = cycle(app)

    assert report.ok
    assert not report.outcomes
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


# -- new runs ------------------------------------------------------------------------------
def test_new_runs_are_uploaded_with_our_fields_and_few_requests(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """N new runs: N uploads with our external_id, the Garmin name and trainer for the
    treadmill; 1 upload + <= 2 other Strava requests per run, 1 Garmin download each."""
    runs = [
        seed_run(pair, 201, start_utc=START, name="Easy 5k"),
        seed_run(pair, 202, start_utc=START + HOUR, name="Hills", type_key="trail_running"),
        seed_run(
            pair, 203, start_utc=START + 2 * HOUR, name="Intervals", type_key="treadmill_running"
        ),
    ]
    app = make_app()

    report = cycle(app)

    n = len(runs)
    assert report.ok
    assert report.outcomes == {"uploaded": n}
    with pair.strava.lock:
        records = {u.external_id: u for u in pair.strava.upload_records.values()}
        requests = dict(pair.strava.requests)
    assert set(records) == {external_id_for(r.garmin_id) for r in runs}
    for run in runs:
        record = records[external_id_for(run.garmin_id)]
        assert record.name == run.name
        assert record.data_type == "fit"
        assert record.trainer is (run.type_key == "treadmill_running")
        (strava_id,) = strava_ids_with_external_id(pair, external_id_for(run.garmin_id))
        entry = ledger(app, run.garmin_id)
        assert entry.outcome is UploadOutcome.UPLOADED
        assert entry.strava_activity_id == strava_id
    assert requests["upload"] == n
    assert sum(requests.values()) - n <= 2 * n
    # One gear request per uploaded run (issue 21): its Strava gear is set after it.
    assert pair.garmin.requests == {"list": 1, "download": n, "gear": n}


# -- already on Strava ---------------------------------------------------------------------
# Strava activity already there: (external_id, start offset s, elapsed s, how matched).
ALREADY_ON_STRAVA: dict[str, tuple[str | None, int, int, str]] = {
    "garmin-sync": ("garmin_ping_426342097456", 30, 1500, "strava:garmin_sync"),
    "same-start-elapsed-sport": (None, 45, 1830, "strava:start_time"),
}


@pytest.mark.parametrize("case", list(ALREADY_ON_STRAVA))
def test_activity_already_on_strava_is_recorded_as_exists(
    pair: SandboxPair, make_app: Callable[..., App], case: str
) -> None:
    """A run Strava already has (Garmin's own sync, or same start/elapsed/sport) is
    `exists` with that Strava id: no download, no upload."""
    external_id, offset_s, elapsed_s, how = ALREADY_ON_STRAVA[case]
    seed_run(pair, 301, start_utc=START, duration_s=1800)
    strava_id = pair.strava.add_activity(
        pair.athlete_id,
        start_utc=START + timedelta(seconds=offset_s),
        elapsed_s=elapsed_s,
        external_id=external_id,
    )
    app = make_app()

    report = cycle(app)

    entry = ledger(app, 301)
    assert report.outcomes == {"exists": 1}
    assert entry.outcome is UploadOutcome.EXISTS
    assert entry.strava_activity_id == strava_id
    assert entry.detail == how
    assert pair.strava.uploads == 0
    assert pair.garmin.requests["download"] == 0


def test_ride_at_the_same_time_is_not_taken_for_the_run(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A Strava ride with the run's start and elapsed time is another activity: the run
    is uploaded."""
    seed_run(pair, 302, start_utc=START, duration_s=1800)
    ride_id = pair.strava.add_activity(
        pair.athlete_id,
        start_utc=START + timedelta(seconds=60),
        elapsed_s=1800,
        sport_type="Ride",
        name="Commute",
    )
    app = make_app()

    cycle(app)

    entry = ledger(app, 302)
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.strava_activity_id not in {None, ride_id}
    assert pair.strava.uploads == 1


# -- what is not uploaded ------------------------------------------------------------------
def test_manual_activity_is_skipped_without_download(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A manual Garmin activity is `skipped` (manual) and its file is never requested."""
    seed_run(pair, 401, start_utc=START, manual=True, name="Manual entry")
    app = make_app()

    report = cycle(app)

    entry = ledger(app, 401)
    assert report.outcomes == {"skipped": 1}
    assert entry.outcome is UploadOutcome.SKIPPED
    assert "manual" in entry.detail
    assert pair.garmin.requests["download"] == 0
    assert pair.strava.uploads == 0


def test_non_running_type_is_not_touched_by_default(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """With the default G2S_ACTIVITY_TYPES a ride gets no ledger entry, no download and
    no Strava request."""
    seed_run(pair, 402, start_utc=START, type_key="cycling", name="Ride")
    app = make_app()

    report = cycle(app)

    assert not report.outcomes
    assert app.store.get_uploads(USER, [402]) == {}
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


def test_all_types_setting_uploads_the_ride(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """G2S_ACTIVITY_TYPES="*" includes the ride, which is uploaded."""
    seed_run(pair, 403, start_utc=START, type_key="cycling", name="Ride")
    app = make_app(activity_types="*")

    cycle(app)

    assert ledger(app, 403).outcome is UploadOutcome.UPLOADED
    (strava_id,) = strava_ids_with_external_id(pair, external_id_for(403))
    assert pair.strava.activities[strava_id].sport_type == "Ride"


def test_gpx_original_is_uploaded_as_gpx(pair: SandboxPair, make_app: Callable[..., App]) -> None:
    """A GPX ORIGINAL is uploaded with data_type gpx."""
    seed_run(pair, 404, start_utc=START, fmt="gpx", name="Imported", duration_s=1200)
    app = make_app()

    cycle(app)

    assert ledger(app, 404).outcome is UploadOutcome.UPLOADED
    (record,) = pair.strava.upload_records.values()
    assert record.data_type == "gpx"
    assert record.file_name.endswith(".gpx")


# -- Strava says duplicate -----------------------------------------------------------------
@pytest.mark.parametrize("html", [False, True], ids=["plain", "html"])
def test_strava_duplicate_is_recorded_with_its_activity(
    pair: SandboxPair, make_app: Callable[..., App], html: bool
) -> None:
    """An activity at the same start that our rules do not match (other elapsed time):
    we upload, Strava says duplicate, the ledger says `duplicate` with Strava's id."""
    pair.strava.duplicate_error_html = html
    seed_run(pair, 501, start_utc=START, duration_s=1800)
    other = pair.strava.add_activity(pair.athlete_id, start_utc=START, elapsed_s=3000)
    app = make_app()

    report = cycle(app)

    entry = ledger(app, 501)
    assert report.outcomes == {"duplicate": 1}
    assert entry.outcome is UploadOutcome.DUPLICATE
    assert entry.strava_activity_id == other
    assert pair.strava.uploads == 1
    assert len(pair.strava.activities) == 1


# -- processing ----------------------------------------------------------------------------
def test_upload_still_processing_is_settled_by_the_next_cycle(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Still processing after the poll: `processing`; the next cycle settles it as
    uploaded with exactly 1 status read and no second upload."""
    pair.strava.processing_delay_s = 3600
    seed_run(pair, 601, start_utc=START)
    app = make_app()

    cycle(app)

    entry = ledger(app, 601)
    assert entry.outcome is UploadOutcome.PROCESSING
    assert entry.upload_id is not None
    assert pair.strava.uploads == 1

    pair.strava.processing_delay_s = 0  # Strava is done now
    pair.reset_counts()
    report = cycle(app)

    entry = ledger(app, 601)
    assert report.outcomes == {"uploaded": 1}
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.strava_activity_id == strava_ids_with_external_id(pair, external_id_for(601))[0]
    assert pair.strava.requests == {"upload_status": 1}
    assert pair.garmin.requests == {"list": 1}


# -- bad input -----------------------------------------------------------------------------
BAD_ID = 701
GOOD_ID = 702


def _fit() -> bytes:
    return build_activity_fit(start_utc=START, duration_s=600)


BAD_ORIGINALS: dict[str, tuple[Callable[[], bytes], str]] = {
    "traversal": (lambda: zip_traversal(_fit()), "climbs out"),
    "absolute": (lambda: zip_absolute_path(_fit()), "absolute path"),
    "symlink": (lambda: zip_symlink(BAD_ID), "symlink"),
    "too-many-members": (lambda: zip_too_many_members(BAD_ID, _fit()), "members, over"),
    "bomb": (lambda: zip_bomb(BAD_ID), "compression ratio"),
    "no-activity-file": (lambda: zip_no_activity(BAD_ID), "no .fit, .gpx or .tcx"),
    "not-a-zip": (not_a_zip, "not a zip"),
    "fit-bad-crc": (lambda: zip_original(BAD_ID, corrupt_crc(_fit())), "CRC mismatch"),
    "fit-truncated": (lambda: zip_original(BAD_ID, truncate(_fit(), 300)), "truncated"),
    "fit-wrong-header": (lambda: zip_original(BAD_ID, wrong_header(_fit())), "no .FIT header"),
}


@pytest.mark.parametrize("case", list(BAD_ORIGINALS))
def test_bad_original_is_skipped_and_the_cycle_goes_on(
    pair: SandboxPair, make_app: Callable[..., App], case: str
) -> None:
    """A hostile zip or a corrupt FIT is `skipped` with its reason, nothing is uploaded
    for it, and the good run after it is uploaded in the same cycle."""
    build, reason = BAD_ORIGINALS[case]
    seed_run(pair, BAD_ID, start_utc=START, original=build())
    seed_run(pair, GOOD_ID, start_utc=START + HOUR)
    app = make_app()

    report = cycle(app)

    bad = ledger(app, BAD_ID)
    assert bad.outcome is UploadOutcome.SKIPPED
    assert bad.detail.startswith("file rejected: ")
    assert reason in bad.detail
    assert ledger(app, GOOD_ID).outcome is UploadOutcome.UPLOADED
    assert report.outcomes == {"skipped": 1, "uploaded": 1}
    (record,) = pair.strava.upload_records.values()
    assert record.external_id == external_id_for(GOOD_ID)


def test_activity_record_without_type_is_skipped_and_the_cycle_goes_on(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A listed record with no activityType is `skipped` (invalid record, with the field
    named) and the good run after it is uploaded."""
    record = make_record(BAD_ID, "Broken", "running", START, 1800, 6000.0)
    del record["activityType"]
    pair.garmin.add_activity(record, zip_original(BAD_ID, _fit()))
    seed_run(pair, GOOD_ID, start_utc=START + HOUR)
    app = make_app()

    report = cycle(app)

    bad = ledger(app, BAD_ID)
    assert bad.outcome is UploadOutcome.SKIPPED
    assert "invalid activity record" in bad.detail
    assert "activityType" in bad.detail
    assert ledger(app, GOOD_ID).outcome is UploadOutcome.UPLOADED
    assert report.outcomes == {"skipped": 1, "uploaded": 1}
    assert pair.garmin.requests["download"] == 1
    assert pair.strava.uploads == 1


# -- dry run -------------------------------------------------------------------------------
def test_dry_run_reports_and_changes_nothing(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A dry run reports would_upload, leaves the ledger empty, downloads and uploads
    nothing."""
    seed_run(pair, 801, start_utc=START)
    seed_run(pair, 802, start_utc=START + HOUR)
    app = make_app()

    report = cycle(app, dry_run=True)

    assert report.outcomes == {"would_upload": 2}
    assert app.store.list_uploads(USER) == []
    assert pair.garmin.requests["download"] == 0
    assert pair.strava.uploads == 0


# -- two runners ---------------------------------------------------------------------------
def test_lease_lets_only_one_of_two_runners_sync_the_account(
    pair: SandboxPair, tmp_path: Path, open_app: Callable[[Settings], App]
) -> None:
    """Two apps on one SQLite file (two processes): while the first holds the lease
    mid-cycle, the second skips the account; every run lands on Strava exactly once."""
    runs = [seed_run(pair, 900 + i, start_utc=START + i * HOUR) for i in range(3)]
    settings = sandbox_settings(pair, tmp_path / "g2s.sqlite3")
    first, second = open_app(settings), open_app(settings)
    in_cycle, second_done = threading.Event(), threading.Event()

    def hold_the_lease(_seconds: float) -> None:
        in_cycle.set()
        second_done.wait(timeout=30)

    first.poll_delay_s = 0.01  # so the first cycle "sleeps" before its status poll
    first.sleep = hold_the_lease
    reports: list[CycleReport] = []
    worker = threading.Thread(target=lambda: reports.append(cycle(first)))
    worker.start()
    try:
        assert in_cycle.wait(timeout=30)
        second_report = cycle(second)
    finally:
        second_done.set()
        worker.join(timeout=30)

    assert "lease" in second_report.skipped_reason
    assert not second_report.outcomes
    (first_report,) = reports
    assert first_report.outcomes == {"uploaded": len(runs)}
    for run in runs:
        assert len(strava_ids_with_external_id(pair, external_id_for(run.garmin_id))) == 1
    assert pair.strava.uploads == len(runs)


# -- Garmin tokens -------------------------------------------------------------------------
def test_rotated_garmin_tokens_are_written_back(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """An expired Garmin access token is refreshed during the cycle and the rotated
    tokens replace the stored ones (the old refresh token is dead)."""
    expired = pair.garmin.issue_tokens(lifetime_s=0)
    app = make_app(garmin_tokens=expired)
    before = app.store.get_garmin_tokens(USER)
    assert before is not None
    seed_run(pair, 1001, start_utc=START)

    report = cycle(app)

    after = app.store.get_garmin_tokens(USER)
    assert after is not None
    assert report.outcomes == {"uploaded": 1}
    assert pair.garmin.requests["token_refresh"] == 1
    assert after.blob != before.blob
    assert after.version > before.version
    new, old = json.loads(after.blob), json.loads(before.blob)
    assert pair.garmin.is_access_token_valid(new["di_token"])
    assert pair.garmin.is_refresh_token_valid(new["di_refresh_token"])
    assert not pair.garmin.is_refresh_token_valid(old["di_refresh_token"])
    assert pair.garmin.requests["login"] == 0
