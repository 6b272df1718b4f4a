"""Gear, feed muting and Garmin renames (issue 21): one PUT per uploaded run, made once
the activity exists (the poll, or the worker's fetch of the `create`), retried by later
cycles without uploading again; a Garmin rename carried only while Strava shows the
name we set, and only where the mirror is live. The shared recording fakes
(tests/fakes.py) over the real SQLite store and queue, and the real worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeFiles, FakeGarmin, FakeStrava, sqlite_store
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.feed_rules import parse_hide_rules
from garmin2strava.domain.gear import StravaGear, parse_gear_map
from garmin2strava.domain.models import Account, LedgerEntry, UploadOutcome
from garmin2strava.domain.strava_finish import ActivityUpdate
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.errors import TransientError
from garmin2strava.services.mirror_worker import process_events
from garmin2strava.services.observability import MirrorStats
from garmin2strava.services.status import account_status
from garmin2strava.services.strava_finish import FinishConfig
from garmin2strava.services.sync import CycleReport, SyncConfig, SyncDeps, sync_account

USER = "u1"
ATHLETE = 42
T0 = datetime.now(UTC).replace(microsecond=0)
RUN_START = (T0 - timedelta(hours=3)).replace(second=0)
PEGASUS = StravaGear("g101", "Pegasus 41")
BIKE = StravaGear("b202", "Canyon Endurace")


def _gear(
    name: str, *, kind: str = "Shoes", uuid: str = "4f5119d6a65d47b9bb235904f9ff927b"
) -> dict[str, Any]:
    """A Garmin gear record shaped after a real filterGear answer."""
    return {
        "gearPk": 39917352,
        "uuid": uuid,
        "userProfilePk": 95677586,
        "gearMakeName": "Other",
        "gearModelName": "Unknown Shoes",
        "gearTypeName": kind,
        "gearStatusName": "active",
        "displayName": name,
        "customMakeModel": None,
    }


@dataclass
class World:
    store: SqliteStore
    queue: SqliteEventQueue
    garmin: FakeGarmin = field(default_factory=FakeGarmin)
    files: FakeFiles = field(default_factory=FakeFiles)
    strava: FakeStrava = field(
        default_factory=lambda: FakeStrava(athlete_id=ATHLETE, gear=[PEGASUS, BIKE])
    )
    now: list[datetime] = field(default_factory=lambda: [T0])
    webhook_live: bool = False
    strava_built: int = 0
    finish: FinishConfig = field(default_factory=FinishConfig)

    def cycle(self) -> CycleReport:
        def strava() -> FakeStrava:
            self.strava_built += 1
            return self.strava

        deps = SyncDeps(
            store=self.store,
            garmin=lambda: self.garmin,
            strava=strava,
            files=self.files,
            config=SyncConfig(wants_type=lambda _key: True, finish=self.finish),
            clock=lambda: self.now[0],
            sleep=lambda _s: None,
            webhook_settles=lambda: self.webhook_live,
            mirror_live=lambda: self.webhook_live,
        )
        return sync_account(deps, USER)

    def event(self, activity_id: int, aspect: str, **updates: str) -> None:
        """Strava's event for an activity, queued as the receiver queues it."""
        self.now[0] += timedelta(seconds=1)
        event = WebhookEvent(
            object_type="activity",
            object_id=activity_id,
            aspect_type=aspect,
            owner_id=ATHLETE,
            subscription_id=1,
            event_time=int(self.now[0].timestamp()),
            updates=updates,
        )
        self.queue.enqueue(event, now=self.now[0])

    def work(self) -> None:
        process_events(
            self.queue, self.store, lambda _user: self.strava, now=self.now[0], stats=MirrorStats()
        )

    def entry(self, garmin_id: int) -> LedgerEntry:
        return self.store.get_uploads(USER, [garmin_id])[garmin_id]

    def later(self, **delta: float) -> None:
        self.now[0] += timedelta(**delta)


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


def _run(world: World, garmin_id: int, *gear: dict[str, Any], **extra: Any) -> None:
    world.garmin.add_run(garmin_id, start=RUN_START + timedelta(hours=garmin_id % 10), **extra)
    if gear:
        world.garmin.gear[garmin_id] = list(gear)


def test_garmin_gear_matched_by_name_is_set_in_one_put_after_the_poll(world: World) -> None:
    """Garmin's " pegasus  41" is the athlete's "Pegasus 41" shoe (case and spacing
    ignored): one gear read on Garmin, one athlete read, the upload, the poll, one PUT;
    the ledger says which gear was set, and the next cycle makes no Strava request."""
    _run(world, 11, _gear(" pegasus  41"))
    world.cycle()
    assert world.garmin.gear_reads == [11]
    assert world.strava.requests == ["list", "athlete", "upload", "poll", "update"]
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="g101"))]
    finish = world.entry(11).finish
    assert finish is not None
    assert (finish.gear_id, finish.gear_name, finish.owed) == ("g101", "Pegasus 41", None)
    built = world.strava_built
    world.later(minutes=1)
    world.cycle()
    assert (world.strava_built, len(world.strava.requests)) == (built, 5)  # idle: no client
    assert world.garmin.gear_reads == [11]


def test_the_gear_map_wins_and_needs_no_athlete_read(world: World) -> None:
    """`G2S_GEAR_MAP` maps the Garmin uuid to a Strava gear id: no GET /athlete at all."""
    world.finish = FinishConfig(gear_map=parse_gear_map("4F5119D6A65D47B9BB235904F9FF927B=b202"))
    _run(world, 12, _gear("Pegasus 41"))
    world.cycle()
    assert "athlete" not in world.strava.requests
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="b202"))]


def test_unmapped_gear_leaves_stravas_default_and_says_which(world: World) -> None:
    """No Strava gear of that name and nothing else to set: no PUT; the ledger names
    the Garmin gear that matched nothing."""
    _run(world, 13, _gear("Old Trail Shoes"))
    world.cycle()
    assert "update" not in world.strava.requests
    finish = world.entry(13).finish
    assert finish is not None
    assert (finish.gear_id, finish.gear_unmapped) == (None, "Old Trail Shoes")


def test_a_treadmill_run_under_indoor_is_hidden_with_its_gear_in_the_same_put(
    world: World,
) -> None:
    """`indoor` hides what is uploaded with the trainer flag; gear and muting go in one
    PUT; an outdoor run under the same rules is not hidden."""
    world.finish = FinishConfig(hide_rules=parse_hide_rules("indoor"))
    treadmill = {"typeKey": "treadmill_running", "typeId": 18, "parentTypeId": 1}
    _run(world, 14, _gear("Pegasus 41"), activityType=treadmill)
    _run(world, 15)
    world.cycle()
    assert world.strava.uploads[0]["trainer"] is True
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="g101", hide_from_home=True))]
    finish = world.entry(14).finish
    assert finish is not None
    assert (finish.hidden, finish.hidden_by) == (True, "indoor")
    assert world.strava.requests.count("update") == 1  # the outdoor run owes nothing


def test_short_runs_are_hidden_by_distance_or_time(world: World) -> None:
    world.finish = FinishConfig(hide_rules=parse_hide_rules("under:3km, under:20min"))
    _run(world, 16, distance=2500.0)
    _run(world, 17, duration=1000.0, elapsedDuration=1000.0)
    _run(world, 18)  # 5 km in 30 minutes
    world.cycle()
    assert sorted(world.strava.updates) == [
        (9500, ActivityUpdate(hide_from_home=True)),
        (9501, ActivityUpdate(hide_from_home=True)),
    ]


def test_a_failed_put_is_retried_by_a_later_cycle_without_uploading_again(world: World) -> None:
    """The PUT fails (an outage): the run is uploaded and settled, the PUT owed with a
    retry time; cycles before it send nothing, the first after it sends it once."""
    _run(world, 19, _gear("Pegasus 41"))
    world.strava.update_errors.append(TransientError("Strava answered 503"))
    world.cycle()
    entry = world.entry(19)
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.finish is not None
    assert entry.finish.owed == ActivityUpdate(gear_id="g101")
    assert entry.finish.retry_at is not None
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests.count("update") == 1  # not due yet
    mark = world.store.ledger_mark(USER)
    assert mark is not None
    assert mark.idle_until == entry.finish.retry_at  # the idle finding ends with the wait
    world.later(minutes=2)
    world.cycle()
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="g101"))]
    assert world.strava.requests.count("upload") == 1
    finished = world.entry(19).finish
    assert finished is not None
    assert (finished.owed, finished.gear_id) == (None, "g101")


def test_a_put_owed_for_a_run_scrolled_out_of_the_listing_is_still_sent(world: World) -> None:
    """The owed entry is in the uploader's index (GSI1): found without the listing."""
    _run(world, 20, _gear("Pegasus 41"))
    world.strava.update_errors.append(TransientError("Strava answered 503"))
    world.cycle()
    world.garmin.records.clear()  # scrolled out
    world.later(minutes=3)
    world.cycle()
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="g101"))]
    assert world.store.list_unsettled_uploads(USER) == []


def test_the_athletes_gear_is_read_at_most_once_a_day(world: World) -> None:
    _run(world, 21, _gear("Pegasus 41"))
    world.cycle()
    world.later(hours=2)
    _run(world, 22, _gear("Canyon Endurace", kind="Bike"))
    world.cycle()
    assert world.strava.requests.count("athlete") == 1
    assert world.strava.updates[-1] == (9501, ActivityUpdate(gear_id="b202"))
    world.later(days=1)
    _run(world, 23, _gear("Pegasus 41"))
    world.cycle()
    assert world.strava.requests.count("athlete") == 2


def test_with_the_webhook_the_workers_create_makes_the_one_put(world: World) -> None:
    """Webhook live: the upload is not polled; the worker's fetch of the `create`
    settles it and sends the PUT at once (1 upload + 1 read + 1 write per run)."""
    world.webhook_live = True
    world.finish = FinishConfig(gear_map=parse_gear_map("Pegasus 41=g101"))
    _run(world, 24, _gear("Pegasus 41"))
    world.cycle()
    world.event(9500, "create")
    world.work()
    assert world.strava.requests == ["list", "upload", "fetch", "update"]
    assert world.strava.updates == [(9500, ActivityUpdate(gear_id="g101"))]
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests == ["list", "upload", "fetch", "update"]


def _uploaded_and_mirrored(world: World, garmin_id: int) -> None:
    world.webhook_live = True
    _run(world, garmin_id)
    world.cycle()
    world.event(9500, "create")
    world.work()
    world.strava.requests.clear()


def _rename_on_garmin(world: World, garmin_id: int, name: str) -> None:
    for record in world.garmin.records:
        if record["activityId"] == garmin_id:
            record["activityName"] = name


def test_a_garmin_rename_reaches_strava_in_one_put(world: World) -> None:
    """The mirror shows Strava still has the uploaded name: the new Garmin name is sent
    (0 reads, one write), recorded as carried; the update event it causes changes
    nothing more."""
    _uploaded_and_mirrored(world, 30)
    world.later(minutes=1)
    world.cycle()  # idle: the ledger's idle mark holds this listing
    mark = world.store.ledger_mark(USER)
    assert mark is not None
    assert mark.idle_key is not None
    _rename_on_garmin(world, 30, "Tempo by the river")
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests == ["update"]
    assert world.strava.updates == [(9500, ActivityUpdate(name="Tempo by the river"))]
    finish = world.entry(30).finish
    assert finish is not None
    assert (finish.name_set, finish.name_carried) == ("Tempo by the river", True)
    world.event(9500, "update", title="Tempo by the river")
    world.work()
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests == ["update"]


def test_a_rename_made_on_strava_first_is_kept_for_good(world: World) -> None:
    """Renamed on Strava (its update event reached the mirror): a later Garmin rename is
    not carried, now or after another Garmin rename."""
    _uploaded_and_mirrored(world, 31)
    world.event(9500, "update", title="My Strava title")
    world.work()
    _rename_on_garmin(world, 31, "Garmin title")
    world.later(minutes=1)
    world.cycle()
    assert "update" not in world.strava.requests
    finish = world.entry(31).finish
    assert finish is not None
    assert finish.strava_name_kept
    _rename_on_garmin(world, 31, "Garmin title again")
    world.later(minutes=1)
    world.cycle()
    assert "update" not in world.strava.requests


def test_without_a_live_mirror_the_rename_is_skipped_and_said(world: World) -> None:
    """Plain `sync` (no webhook): Strava's name is unknown without a read, so nothing is
    carried or read; the cycle's audit says why."""
    _uploaded_and_mirrored(world, 32)
    world.webhook_live = False
    _rename_on_garmin(world, 32, "New name")
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests == []
    [cycle] = world.store.list_audit(USER, limit=1)
    [item] = cycle.detail["items"]
    assert (item["outcome"], item["detail"]) == (
        "rename_skip",
        "Garmin rename not carried: the mirror is not live",
    )
    [account] = account_status(world.store, now=world.now[0])["accounts"]
    assert account["renamesNotCarried"] == 1  # what `status` says


def test_carry_turned_off_sends_nothing(world: World) -> None:
    world.finish = replace(world.finish, carry_names=False)
    _uploaded_and_mirrored(world, 33)
    _rename_on_garmin(world, 33, "New name")
    world.later(minutes=1)
    world.cycle()
    assert world.strava.requests == []
