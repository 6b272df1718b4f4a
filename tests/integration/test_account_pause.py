"""Pause and resume against the sandboxes: a running cycle stops before its next
activity; the daemon's scheduler and the Lambda sync skip a paused account; resume
brings it back."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from g2s_harness.aws_lambda import USER as LAMBDA_USER
from g2s_harness.aws_lambda import Deployment, FakeContext
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, build_cipher
from garmin2strava.entrypoints.aws_lambda import sync_handler
from garmin2strava.entrypoints.daemon import schedule_sync
from garmin2strava.services.account_control import AccountControl
from garmin2strava.services.sync import SyncDeps
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
RUNS = 20
PAUSE_AT_UPLOAD = 3
# Five-minute runs: the Strava emulator decodes every uploaded file (one record a
# second), and nothing here depends on a run's length.
RUN_S = 300


def _seed(pair: SandboxPair, n: int, first_id: int = 5_000_001) -> None:
    for i in range(n):
        seed_run(
            pair,
            first_id + i,
            start_utc=START + timedelta(hours=i),
            duration_s=RUN_S,
            name=f"Run {i}",
        )


def test_pause_stops_a_running_cycle_before_its_next_activity(
    pair: SandboxPair, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """20 new runs; the operator pauses (through another store connection, as the CLI
    would) while the 3rd upload is in hand: that upload completes, no 4th activity is
    downloaded or uploaded, and the report says why; resumed, the next cycle uploads
    the other 17."""
    _seed(pair, RUNS)
    app = make_app()
    settings = app.settings
    operator = AccountControl(
        store=SqliteStore(settings.db_path, build_cipher(settings)), clock=app.clock
    )
    uploads_started = 0

    def checkpoint(step: str) -> None:
        nonlocal uploads_started
        if step == "upload":
            uploads_started += 1
            if uploads_started == PAUSE_AT_UPLOAD:
                operator.pause(USER)

    def deps_for(user_id: str) -> SyncDeps:
        deps = app.sync_deps(user_id)
        deps.checkpoint = checkpoint
        return deps

    (report,) = sync_all(app.store, deps_for)

    assert report.skipped_reason.startswith("paused by the operator")
    assert report.outcomes == {"uploaded": PAUSE_AT_UPLOAD}
    assert pair.strava_counts()["uploads"] == PAUSE_AT_UPLOAD
    assert pair.garmin.requests["download"] == PAUSE_AT_UPLOAD
    # The history records the stop.
    cycle = next(e for e in app.store.list_audit(USER) if e.kind == "sync.cycle")
    assert cycle.detail["stopped"].startswith("paused by the operator")

    # Paused: the next cycle does nothing at all (not even Garmin's list).
    pair.reset_counts()
    (skipped,) = sync_all(app.store, app.sync_deps)
    assert skipped.skipped_reason.startswith("paused")
    assert pair.garmin_count() == 0
    assert pair.strava_total() == 0

    operator.resume(USER)
    (resumed,) = sync_all(app.store, app.sync_deps)
    assert resumed.outcomes == {"uploaded": RUNS - PAUSE_AT_UPLOAD}
    assert pair.strava_counts()["uploads"] == RUNS - PAUSE_AT_UPLOAD


def test_the_daemons_scheduler_skips_a_paused_account(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """The daemon's sync job runs while the account is paused: no Garmin or Strava
    request; after resume the same job uploads."""
    _seed(pair, 2)
    app = make_app()
    control = AccountControl(store=app.store, clock=app.clock)
    control.pause(USER)
    ran = threading.Semaphore(0)
    scheduler = BackgroundScheduler(timezone="UTC")

    def on_run(event: JobExecutionEvent) -> None:
        del event
        ran.release()

    scheduler.add_listener(on_run, EVENT_JOB_EXECUTED)
    schedule_sync(app, scheduler)
    scheduler.start()
    try:
        assert ran.acquire(timeout=30)  # the first run starts at once
        assert pair.garmin_count() == 0
        assert pair.strava_total() == 0
        control.resume(USER)
        scheduler.get_job("sync").modify(next_run_time=datetime.now(UTC))
        assert ran.acquire(timeout=60)
    finally:
        scheduler.shutdown(wait=True)
    assert pair.strava_counts()["uploads"] == 2


def test_the_lambda_sync_skips_a_paused_account(
    lambda_deployment: Callable[..., AbstractContextManager[Deployment]],
) -> None:
    """The scheduled Lambda counts the paused account as skipped and makes no request
    for it; resumed, the next invocation uploads."""
    with lambda_deployment() as deployment:
        pair = deployment.pair
        seed_run(pair, 5_100_001, start_utc=START, duration_s=RUN_S, name="Lambda run")
        control = AccountControl(store=deployment.store, clock=lambda: datetime.now(UTC))
        app = sync_handler.runtime()
        app.poll_delay_s = 0
        control.pause(LAMBDA_USER)
        with redirect_stdout(io.StringIO()):  # its EMF lines
            summary = sync_handler.handler({}, FakeContext())
        assert (summary["accounts"], summary["skipped"], summary["outcomes"]) == (1, 1, {})
        assert pair.garmin_count() == 0
        control.resume(LAMBDA_USER)
        with redirect_stdout(io.StringIO()):
            summary = sync_handler.handler({}, FakeContext())
        assert summary["outcomes"] == {"uploaded": 1}
