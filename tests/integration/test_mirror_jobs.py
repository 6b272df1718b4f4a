"""The daemon's mirror jobs (entrypoints.daemon.schedule_mirror_jobs): what is
scheduled from the settings, and what each job does when it runs, against the
sandboxes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from g2s_sandbox.scenario import SandboxPair
from garmin2strava.bootstrap import App
from garmin2strava.entrypoints.daemon import FIRST_MIRROR_JOB, schedule_mirror_jobs
from garmin2strava.services.reconcile import reconcile_due

pytestmark = pytest.mark.integration

USER = "demo"


def jobs(app: App) -> dict[str, object]:
    scheduler = BackgroundScheduler(timezone="UTC")  # never started: jobs are only read
    schedule_mirror_jobs(app, scheduler)
    return {job.id: job for job in scheduler.get_jobs()}


def test_no_mirror_jobs_when_both_are_off(make_app: Callable[..., App]) -> None:
    """G2S_MIRROR_RECONCILE_HOURS=0 and no G2S_MIRROR_STREAMS: nothing is scheduled."""
    assert jobs(make_app(mirror_reconcile_hours=0)) == {}


def test_reconcile_and_streams_jobs_run_what_they_are_for(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Both jobs start 10 minutes after the daemon; reconcile runs a due pass (and not
    again before the interval), streams reads what is pending."""
    app = make_app(mirror_streams="time,heartrate", mirror_reconcile_hours=24)
    app.store.link_athlete(pair.athlete_id, USER)
    now = datetime.now(UTC)
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=now - timedelta(days=1), elapsed_s=1200
    )
    found = jobs(app)
    assert sorted(found) == ["reconcile", "streams"]
    for job in found.values():
        next_run = job.next_run_time  # type: ignore[attr-defined]  # apscheduler is untyped
        assert abs(next_run - (now + FIRST_MIRROR_JOB)) < timedelta(seconds=30)

    found["reconcile"].func()  # type: ignore[attr-defined]  # apscheduler is untyped
    assert app.store.get_workout(USER, activity) is not None
    assert app.store.get_streams(USER, activity) is not None  # taken with the repair
    assert not reconcile_due(app.store, USER, now=app.clock(), every=timedelta(hours=24))
    pair.reset_counts()
    found["reconcile"].func()  # type: ignore[attr-defined]  # not due: no request
    assert pair.strava_total() == 0

    app.store.mark_streams_pending(USER, 424242)  # an activity the mirror never had
    found["streams"].func()  # type: ignore[attr-defined]  # apscheduler is untyped
    assert app.store.list_pending_streams(USER) == []


def test_a_reconcile_run_the_scheduler_woke_late_for_still_runs(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A scheduler waking a minute after a mirror job was due (a loaded or suspended
    machine) runs it then, instead of skipping it to the next hour."""
    app = make_app(mirror_reconcile_hours=24)
    app.store.link_athlete(pair.athlete_id, USER)
    activity = pair.strava.add_activity(
        pair.athlete_id, start_utc=datetime.now(UTC) - timedelta(days=1), elapsed_s=1200
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_mirror_jobs(app, scheduler)
    scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC) - timedelta(minutes=1))
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while app.store.get_workout(USER, activity) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown()
    assert app.store.get_workout(USER, activity) is not None
