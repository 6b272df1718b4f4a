"""Webhook-settled uploads (issue 11): while the webhook is live, the uploader does not
poll; the worker's fetch of the `create` settles the ledger entry; what gets no event
is polled after `webhook_wait_s`. The shared recording fakes (tests/fakes.py) over the
real SQLite store, and the real worker (`process_events`) over the real SQLite queue."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fakes import FakeFiles, FakeGarmin, FakeStrava, sqlite_store
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account, UploadOutcome
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats
from garmin2strava.services.sync import CycleReport, SyncConfig, SyncDeps, sync_account

USER = "u1"
ATHLETE = 42
T0 = datetime.now(UTC).replace(microsecond=0)
RUN_START = (T0 - timedelta(hours=3)).replace(second=0)


@dataclass
class World:
    store: SqliteStore
    queue: SqliteEventQueue
    garmin: FakeGarmin = field(default_factory=FakeGarmin)
    files: FakeFiles = field(default_factory=FakeFiles)
    strava: FakeStrava = field(default_factory=lambda: FakeStrava(athlete_id=ATHLETE))
    now: list[datetime] = field(default_factory=lambda: [T0])
    webhook_live: bool = True
    config: SyncConfig = field(
        default_factory=lambda: SyncConfig(wants_type=lambda key: key == "running")
    )

    def cycle(self) -> CycleReport:
        deps = SyncDeps(
            store=self.store,
            garmin=lambda: self.garmin,
            strava=lambda: self.strava,
            files=self.files,
            config=self.config,
            clock=lambda: self.now[0],
            sleep=lambda _s: None,
            webhook_settles=lambda: self.webhook_live,
        )
        return sync_account(deps, USER)

    def new_run(self, garmin_id: int) -> None:
        self.garmin.add_run(garmin_id, start=RUN_START)

    def create_event(self, activity_id: int) -> None:
        """Strava's `create` for an activity, queued as the receiver queues it."""
        event = WebhookEvent(
            object_type="activity",
            object_id=activity_id,
            aspect_type="create",
            owner_id=ATHLETE,
            subscription_id=1,
            event_time=int(self.now[0].timestamp()),
            updates={},
        )
        self.queue.enqueue(event, now=self.now[0])

    def work(self) -> None:
        process_events(
            self.queue, self.store, lambda _user: self.strava, now=self.now[0], stats=MirrorStats()
        )

    def outcome(self, garmin_id: int) -> UploadOutcome:
        return self.store.get_uploads(USER, [garmin_id])[garmin_id].outcome


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = tmp_path / "store.sqlite3"
    with sqlite_store(db) as store:
        store.put_account(Account(user_id=USER, strava_athlete_id=ATHLETE))
        store.link_athlete(ATHLETE, USER)
        queue = SqliteEventQueue(db)
        try:
            yield World(store, queue)
        finally:
            queue.close()


def test_with_the_webhook_live_an_upload_costs_no_poll(world: World) -> None:
    """Upload, no status poll; the worker's one fetch for the `create` settles the entry
    `uploaded` with the activity id; the next cycle reads nothing more."""
    world.new_run(11)
    world.cycle()
    assert world.strava.requests == ["list", "upload"]
    assert world.outcome(11) is UploadOutcome.PROCESSING
    world.create_event(9500)
    world.work()
    entry = world.store.get_uploads(USER, [11])[11]
    assert (entry.outcome, entry.strava_activity_id) == (UploadOutcome.UPLOADED, 9500)
    assert world.strava.requests == ["list", "upload", "fetch"]
    world.now[0] += timedelta(minutes=1)
    world.cycle()
    assert world.strava.requests == ["list", "upload", "fetch"]
    assert world.store.get_workout(USER, 9500) is not None  # and it is mirrored


def test_an_upload_that_gets_no_event_is_polled_after_the_wait(world: World) -> None:
    """No `create` arrives (a dropped event, a duplicate): cycles within the wait leave it
    processing without a request; the first cycle after the wait polls it once."""
    world.new_run(12)
    world.cycle()
    for minute in (1, 2, 4):
        world.now[0] = T0 + timedelta(minutes=minute)
        world.cycle()
    assert world.strava.requests.count("poll") == 0
    assert world.outcome(12) is UploadOutcome.PROCESSING
    world.now[0] = T0 + timedelta(seconds=world.config.webhook_wait_s + 1)
    world.cycle()
    assert world.strava.requests.count("poll") == 1
    assert world.outcome(12) is UploadOutcome.UPLOADED
    assert world.strava.requests.count("upload") == 1


def test_without_the_webhook_the_cycle_polls_as_before(world: World) -> None:
    """Webhook off (plain `sync`, the mirror down): one wait, one poll, settled at once."""
    world.webhook_live = False
    world.new_run(13)
    world.cycle()
    assert world.strava.requests == ["list", "upload", "poll"]
    assert world.outcome(13) is UploadOutcome.UPLOADED


def test_a_create_of_someone_elses_activity_settles_nothing(world: World) -> None:
    """An activity without our external_id is mirrored and leaves the ledger alone."""
    world.new_run(14)
    world.cycle()
    world.strava.activities[777] = world.strava.activities[9500] | {
        "id": 777,
        "external_id": "garmin_ping_123",
    }
    world.create_event(777)
    world.work()
    assert world.outcome(14) is UploadOutcome.PROCESSING
    assert world.store.get_workout(USER, 777) is not None
