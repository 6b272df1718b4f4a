"""Streams through the real stravalib against the Strava sandbox: the adapter's read,
the uploader's reserve, and the acceptance path (an uploaded run's create event ends
with its streams in the store; with the budget nearly spent the upload still goes out
and the streams follow later)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_sandbox.fitgen import build_activity_fit
from g2s_sandbox.scenario import SandboxPair, seed_run
from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import App, build_strava, utc_now
from garmin2strava.domain.budget import next_window_reset
from garmin2strava.domain.models import UploadOutcome
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.errors import RateLimited, StravaNotFound
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.streams import catch_up_streams
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

ATHLETE = 501
USER = "u1"
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
STREAMS = "time,heartrate,latlng,altitude,cadence,watts,velocity_smooth,distance"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(os.urandom(32))) as s:
        yield s


def connected(sandbox: StravaSandbox, store: SqliteStore) -> StravaAccess:
    refresh = sandbox.add_athlete(ATHLETE)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
    )
    assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None
    sandbox.requests.clear()
    return build_strava(
        store,
        USER,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        where=sandbox.base_url,
    )


def test_streams_are_read_through_stravalib_keyed_by_type(
    sandbox: StravaSandbox, store: SqliteStore
) -> None:
    """One GET /activities/{id}/streams (key_by_type) brings each stream with its data
    and Strava's series fields; a ride has watts, a run has none; manual: 404."""
    strava = connected(sandbox, store)
    ride = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=600, sport_type="Ride")
    run = sandbox.add_activity(ATHLETE, start_utc=START + timedelta(hours=2), elapsed_s=300)
    manual = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=60, manual=True)

    got = strava.get_activity_streams(ride, ["time", "heartrate", "watts", "latlng"])
    assert sandbox.requests["streams"] == 1
    assert sorted(got) == ["distance", "heartrate", "latlng", "time", "watts"]
    assert got["time"]["data"][:3] == [0, 1, 2]
    assert len(got["latlng"]["data"]) == 601
    assert len(got["latlng"]["data"][0]) == 2
    assert {s["series_type"] for s in got.values()} == {"distance"}
    assert {s["original_size"] for s in got.values()} == {601}
    assert {s["resolution"] for s in got.values()} == {"high"}
    assert "watts" not in strava.get_activity_streams(run, ["time", "watts"])
    with pytest.raises(StravaNotFound):
        strava.get_activity_streams(manual, ["time"])


def test_stream_reads_wait_at_the_reserve_and_uploads_still_go_out(
    sandbox: StravaSandbox, store: SqliteStore, tmp_path: Path
) -> None:
    """With 85 of 100 reads spent this quarter hour, a stream read is refused before
    it is sent (RateLimited until the next window), an ordinary read and an upload
    still go out."""
    strava = connected(sandbox, store)
    activity = sandbox.add_activity(ATHLETE, start_utc=START, elapsed_s=600)
    sandbox.set_usage(short_all=84, daily_all=84, short_read=84, daily_read=84)
    strava.get_activity(activity)  # an ordinary read: the adapter learns the figures
    now = datetime.now(UTC)
    with pytest.raises(RateLimited) as refused:
        strava.get_activity_streams(activity, ["time"])
    assert refused.value.until == next_window_reset(now)
    assert sandbox.requests["streams"] == 0
    path = tmp_path / "run.fit"
    path.write_bytes(build_activity_fit(start_utc=START + timedelta(days=1), duration_s=900))
    status = strava.upload(
        path, data_type="fit", external_id="g2s_1", name="Run", description=None, trainer=False
    )
    assert status.upload_id is not None
    assert sandbox.requests["upload"] == 1


# -- acceptance: an uploaded run's create event, through the worker -------------------------
def _create_event(pair: SandboxPair, activity_id: int) -> WebhookEvent:
    return WebhookEvent(
        object_type="activity",
        object_id=activity_id,
        aspect_type="create",
        owner_id=pair.athlete_id,
        subscription_id=1,
        event_time=int(utc_now().timestamp()),
        updates={},
    )


def _upload_run(pair: SandboxPair, app: App, garmin_id: int) -> int:
    """Sync one seeded Garmin run to Strava; its Strava activity id."""
    seed_run(pair, garmin_id, start_utc=START, duration_s=1800)
    (report,) = sync_all(app.store, app.sync_deps)
    assert report.ok
    entry = app.store.get_uploads("demo", [garmin_id])[garmin_id]
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.strava_activity_id is not None
    app.store.link_athlete(pair.athlete_id, "demo")
    return entry.strava_activity_id


def test_uploaded_run_ends_with_its_streams_in_one_read(
    pair: SandboxPair, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """Streams on: the uploaded run's create event brings the activity (one read) and
    its streams (one read): all seven a run has (no watts), 1,801 samples each; a
    redelivered create reads nothing more."""
    app = make_app(mirror_streams=STREAMS)
    activity_id = _upload_run(pair, app, 31_000_001)
    pair.reset_counts()
    queue = SqliteEventQueue(tmp_path / "queue.sqlite3")
    try:
        queue.enqueue(_create_event(pair, activity_id), now=utc_now())
        counts = process_events(
            queue,
            app.store,
            app.strava_for,
            now=utc_now(),
            stream_types=app.settings.mirror_streams,
        )
        assert counts.processed == 1
        assert dict(pair.strava.requests) == {"activity": 1, "streams": 1}
        kept = app.store.get_streams("demo", activity_id)
        assert kept is not None
        assert sorted(kept.streams) == sorted(set(STREAMS.split(",")) - {"watts"})
        assert {len(s["data"]) for s in kept.streams.values()} == {1801}
        again = _create_event(pair, activity_id)
        queue.enqueue(replace(again, event_time=again.event_time + 5), now=utc_now())
        process_events(
            queue,
            app.store,
            app.strava_for,
            now=utc_now(),
            stream_types=app.settings.mirror_streams,
        )
        assert pair.strava.requests["streams"] == 1
    finally:
        queue.close()


def test_nearly_spent_budget_defers_streams_and_they_catch_up_later(
    pair: SandboxPair, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """85 of 100 reads spent: the run is still uploaded and its create still settles
    (the activity fetched), its streams wait as pending with no stream request; in the
    next window a catch-up reads them, once, and nothing is left pending."""
    app = make_app(mirror_streams=STREAMS)
    pair.strava.set_usage(short_all=85, daily_all=85, short_read=85, daily_read=85)
    activity_id = _upload_run(pair, app, 31_000_002)
    assert pair.strava.requests["upload"] == 1
    queue = SqliteEventQueue(tmp_path / "queue.sqlite3")
    try:
        queue.enqueue(_create_event(pair, activity_id), now=utc_now())
        counts = process_events(
            queue,
            app.store,
            app.strava_for,
            now=utc_now(),
            stream_types=app.settings.mirror_streams,
        )
    finally:
        queue.close()
    assert counts.processed == 1
    assert app.store.get_workout("demo", activity_id) is not None
    assert pair.strava.requests["streams"] == 0
    assert app.store.list_pending_streams("demo") == [activity_id]

    # The next quarter hour: Strava's window rolled over, and so does the app's clock.
    pair.strava.set_usage()
    shift = next_window_reset(utc_now()) - utc_now() + timedelta(seconds=1)
    app.clock = lambda: utc_now() + shift
    result = catch_up_streams(
        app.store, app.strava_for("demo"), "demo", app.settings.mirror_streams, now=app.clock()
    )
    assert (result.stored, result.left, result.until) == (1, 0, None)
    assert pair.strava.requests["streams"] == 1
    assert app.store.list_pending_streams("demo") == []
    kept = app.store.get_streams("demo", activity_id)
    assert kept is not None
    assert kept.samples() == 1801
