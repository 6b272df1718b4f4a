"""Webhook-settled uploads (issue 11): while the webhook is live, the uploader does not
poll; the worker's fetch of the `create` settles the ledger entry; what gets no event
is polled after `webhook_wait_s`. Recording fakes over the real SQLite store, and the
real worker (`process_events`) over the real SQLite queue."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account, PreparedFile, UploadOutcome, UploadStatus
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.errors import StravaNotFound
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats
from garmin2strava.services.sync import CycleReport, SyncConfig, SyncDeps, sync_account

USER = "u1"
ATHLETE = 42
T0 = datetime.now(UTC).replace(microsecond=0)
RUN_START = (T0 - timedelta(hours=3)).replace(second=0)
PROCESSING = "Your activity is still being processed."


@dataclass
class FakeGarmin:
    records: list[dict[str, Any]] = field(default_factory=list)
    downloads: list[int] = field(default_factory=list)

    def list_activities(self, *, start: int, limit: int) -> list[dict[str, Any]]:
        return self.records[start : start + limit]

    def download_original(self, activity_id: int) -> bytes:
        self.downloads.append(activity_id)
        return f"FIT-{activity_id}".encode()


@dataclass
class FakeStrava:
    """Strava as both the uploader and the worker see it: uploads become activities
    (id 9000 + upload id) carrying our external_id; every request is recorded."""

    requests: list[str] = field(default_factory=list)
    activities: dict[int, dict[str, Any]] = field(default_factory=dict)
    queries: list[tuple[datetime, datetime, int, int]] = field(default_factory=list)
    uploaded: list[dict[str, Any]] = field(default_factory=list)

    def list_activities(
        self, *, after: datetime, before: datetime, page: int = 1, per_page: int = 30
    ) -> list[Any]:
        self.requests.append("list")
        self.queries.append((after, before, page, per_page))
        return []

    def upload(
        self,
        path: Path,
        *,
        data_type: str,
        external_id: str,
        name: str,
        description: str | None,
        trainer: bool,
    ) -> UploadStatus:
        self.requests.append("upload")
        self.uploaded.append(
            {"bytes": path.read_bytes(), "data_type": data_type, "name": name}
            | {"description": description, "trainer": trainer, "external_id": external_id}
        )
        upload_id = 500 + len([r for r in self.requests if r == "upload"])
        self.activities[9000 + upload_id] = {
            "id": 9000 + upload_id,
            "athlete": {"id": ATHLETE},
            "name": name,
            "sport_type": "Run",
            "start_date": RUN_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "elapsed_time": 1800,
            "external_id": f"{external_id}.fit",
            "upload_id": upload_id,
        }
        return UploadStatus(upload_id, PROCESSING, None, None, external_id)

    def get_upload(self, upload_id: int) -> UploadStatus:
        self.requests.append("poll")
        return UploadStatus(upload_id, "Your activity is ready.", None, 9000 + upload_id, None)

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        self.requests.append(f"streams {activity_id} {','.join(types)}")  # never, here
        raise StravaNotFound(str(activity_id))

    def get_activity(self, activity_id: int) -> dict[str, Any]:
        self.requests.append("fetch")
        if activity_id not in self.activities:
            raise StravaNotFound(str(activity_id))
        return self.activities[activity_id]


@dataclass
class FakeFiles:
    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        path = workdir / "activity.fit"
        path.write_bytes(original_zip)
        return PreparedFile(path=path, data_type="fit")


@dataclass
class World:
    store: SqliteStore
    queue: SqliteEventQueue
    garmin: FakeGarmin = field(default_factory=FakeGarmin)
    strava: FakeStrava = field(default_factory=FakeStrava)
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
            files=FakeFiles(),
            config=self.config,
            clock=lambda: self.now[0],
            sleep=lambda _s: None,
            webhook_settles=lambda: self.webhook_live,
        )
        return sync_account(deps, USER)

    def new_run(self, garmin_id: int) -> None:
        self.garmin.records.insert(
            0,
            {
                "activityId": garmin_id,
                "activityName": f"Run {garmin_id}",
                "activityType": {"typeKey": "running", "typeId": 1, "parentTypeId": 17},
                "startTimeGMT": RUN_START.strftime("%Y-%m-%d %H:%M:%S"),
                "duration": 1800.0,
                "elapsedDuration": 1800.0,
                "distance": 5000.0,
            },
        )

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
    with SqliteStore(db, AesGcmCipher(bytes(range(32)))) as store:
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
    world.create_event(9501)
    world.work()
    entry = world.store.get_uploads(USER, [11])[11]
    assert (entry.outcome, entry.strava_activity_id) == (UploadOutcome.UPLOADED, 9501)
    assert world.strava.requests == ["list", "upload", "fetch"]
    world.now[0] += timedelta(minutes=1)
    world.cycle()
    assert world.strava.requests == ["list", "upload", "fetch"]
    assert world.store.get_workout(USER, 9501) is not None  # and it is mirrored


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
    world.strava.activities[777] = world.strava.activities[9501] | {
        "id": 777,
        "external_id": "garmin_ping_123",
    }
    world.create_event(777)
    world.work()
    assert world.outcome(14) is UploadOutcome.PROCESSING
    assert world.store.get_workout(USER, 777) is not None
