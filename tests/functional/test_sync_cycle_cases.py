"""The uploader's use cases: one account's cycle with the shared fakes (tests/fakes.py)
that record what they were asked (Garmin, Strava, the file check) over the real SQLite
store in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes import PROCESSING, FakeFiles, FakeGarmin, FakeStrava, sqlite_store
from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    LedgerEntry,
    StravaActivity,
    UploadOutcome,
    UploadStatus,
)
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.errors import (
    GarminAuthError,
    GarminRateLimited,
    RateLimited,
    StravaAuthError,
    TransientError,
)
from garmin2strava.services.sync import CycleReport, SyncConfig, SyncDeps, sync_account

USER = "u1"
# Today: the store keeps audit events for a retention period counted from its own clock.
T0 = datetime.now(UTC).replace(microsecond=0)
RUN_START = (T0 - timedelta(days=1)).replace(second=0)


@dataclass
class World:
    store: SqliteStore
    garmin: FakeGarmin
    strava: FakeStrava
    files: FakeFiles
    now: list[datetime]
    slept: list[float] = field(default_factory=list)
    strava_built: int = 0
    config: SyncConfig = field(default_factory=lambda: SyncConfig(wants_type=_runs))
    lease_owner: str | None = None
    db: Path | None = None

    def deps(self) -> SyncDeps:
        def strava() -> FakeStrava:
            self.strava_built += 1
            return self.strava

        return SyncDeps(
            store=self.store,
            garmin=lambda: self.garmin,
            strava=strava,
            files=self.files,
            config=self.config,
            clock=lambda: self.now[0],
            sleep=self.slept.append,
            lease_owner=self.lease_owner,
        )

    def cycle(self) -> CycleReport:
        return sync_account(self.deps(), USER)

    def entry(self, garmin_id: int) -> LedgerEntry:
        return self.store.get_uploads(USER, [garmin_id])[garmin_id]

    def later(self, delta: timedelta) -> None:
        self.now[0] += delta


def _runs(type_key: str) -> bool:
    return type_key == "running"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sqlite_store(tmp_path / "store.sqlite3") as store:
        store.put_account(Account(user_id=USER))
        yield World(
            store, FakeGarmin(), FakeStrava(), FakeFiles(), [T0], db=tmp_path / "store.sqlite3"
        )


def _new_run(world: World, garmin_id: int, *, start: datetime = RUN_START, **extra: Any) -> bytes:
    return world.garmin.add_run(garmin_id, start=start, **extra)


def test_idle_cycle_asks_garmin_once_and_builds_no_strava_client(world: World) -> None:
    """Nothing new: one Garmin list, no Strava client, no upload; the cycle is recorded."""
    report = world.cycle()
    assert report.ok
    assert not report.outcomes
    assert (world.garmin.lists, world.strava_built) == (1, 0)
    account = world.store.get_account(USER)
    assert account is not None
    assert (account.last_cycle_at, account.last_cycle_ok) == (T0, True)
    assert world.store.acquire_lease(USER, "other", now=T0, ttl_seconds=60)  # released
    # Idle: no audit event (`history` says "idle since" instead).
    assert world.store.list_audit(USER) == []


def test_an_idle_cycle_that_writes_nothing_leaves_its_short_lease_to_its_owner(
    world: World,
) -> None:
    """The Lambda's idle cycle (idle_writes False, a look lease, one owner per
    container): no account write, no release; another runner waits for the short lease
    to run out, the same owner takes it back at once."""
    world.config = SyncConfig(wants_type=_runs, look_lease_s=45, idle_writes=False)
    world.lease_owner = "container-1"
    assert world.cycle().ok
    account = world.store.get_account(USER)
    assert account is not None
    assert account.last_cycle_at is None
    assert not world.store.acquire_lease(USER, "other", now=T0, ttl_seconds=60)
    world.later(timedelta(seconds=30))
    assert world.cycle().ok  # its own lease, taken back
    assert world.store.list_audit(USER) == []
    world.later(timedelta(seconds=46))
    assert world.store.acquire_lease(USER, "other", now=world.now[0], ttl_seconds=60)


def test_a_cycle_with_work_holds_the_whole_lease_and_records(world: World) -> None:
    """Work found under a look lease: the lease is renewed to lease_ttl_s before the
    first write; the cycle is recorded and the lease released, as ever."""
    world.config = SyncConfig(wants_type=_runs, look_lease_s=45, idle_writes=False)
    world.lease_owner = "container-1"
    _new_run(world, 40)
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 1}
    assert [e.kind for e in world.store.list_audit(USER)] == ["sync.cycle"]
    assert world.store.acquire_lease(USER, "other", now=T0, ttl_seconds=60)  # released


def test_the_idle_mark_skips_the_ledger_and_never_hides_a_retry_or_a_new_run(
    world: World,
) -> None:
    """Once a full check found the listing idle, the same listing over the same ledger
    is not read again (a row removed behind the store's back goes unnoticed, which
    proves it); a ledger write (`uploads retry`) or a new run ends that."""
    assert world.db is not None
    world.files.refuse.add(_new_run(world, 41))
    assert world.cycle().outcomes == {UploadOutcome.SKIPPED: 1}
    assert not world.cycle().outcomes  # the full check: the mark is kept
    mark = world.store.ledger_mark(USER)
    assert mark is not None
    assert mark.idle_key is not None
    with sqlite3.connect(world.db) as raw:  # behind the store's back
        raw.execute("DELETE FROM items WHERE sk = ?", (codec.upload_sk(41),))
    assert world.store.get_uploads(USER, [41]) == {}
    assert not world.cycle().outcomes  # trusted the mark: no ledger read, no upload
    assert world.files.prepared == [world.garmin.originals[41]]
    # A ledger write from outside the cycle raises the version: the next one reads.
    world.store.put_upload(
        LedgerEntry(USER, 41, external_id_for(41), UploadOutcome.FAILED, T0, next_retry_at=T0)
    )
    world.files.refuse.clear()
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 1}
    assert not world.cycle().outcomes
    _new_run(world, 42, start=RUN_START + timedelta(hours=2))
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 1}


def test_new_run_is_uploaded_once_and_settled_at_the_poll(world: World) -> None:
    """A new run: one query, one download, one upload with our external_id, one wait,
    one poll; the ledger says uploaded with Strava's id, and the next cycle is idle."""
    original = _new_run(world, 11, description="Legs heavy")
    report = world.cycle()
    assert report.outcomes == {UploadOutcome.UPLOADED: 1}
    assert len(world.strava.queries) == 1
    assert world.garmin.downloads == [11]
    [upload] = world.strava.uploads
    assert upload["bytes"] == original
    assert (upload["external_id"], upload["name"], upload["description"]) == (
        external_id_for(11),
        "Run 11",
        "Legs heavy",
    )
    assert world.slept == [world.config.poll_delay_s]
    assert world.strava.polls == [500]
    entry = world.entry(11)
    assert (entry.outcome, entry.strava_activity_id, entry.attempts) == (
        UploadOutcome.UPLOADED,
        9500,
        1,
    )
    assert not world.cycle().outcomes
    assert len(world.strava.uploads) == 1


def test_run_already_on_strava_is_matched_not_uploaded(world: World) -> None:
    """A run Strava has (same start, elapsed and sport) is `exists`: no download, no upload."""
    _new_run(world, 12)
    world.strava.listed.append(
        StravaActivity(
            activity_id=77,
            athlete_id=1,
            name="Morning Run",
            sport_type="Run",
            start_utc=RUN_START + timedelta(seconds=20),
            elapsed_seconds=1790,
            moving_seconds=None,
            distance_m=None,
            total_elevation_gain=None,
            external_id=None,
            upload_id=None,
            private=False,
            manual=False,
        )
    )
    report = world.cycle()
    assert report.outcomes == {UploadOutcome.EXISTS: 1}
    assert (world.garmin.downloads, world.strava.uploads) == ([], [])
    entry = world.entry(12)
    assert (entry.strava_activity_id, entry.detail) == (77, "strava:start_time")


def test_duplicate_answer_settles_with_the_named_activity(world: World) -> None:
    """Strava's "duplicate of activity N" settles the run as duplicate of N."""
    _new_run(world, 13)
    world.strava.upload_answers.append(
        UploadStatus(500, "There was an error", "x.fit duplicate of activity 4242", None, None)
    )
    report = world.cycle()
    assert report.outcomes == {UploadOutcome.DUPLICATE: 1}
    assert world.entry(13).strava_activity_id == 4242
    assert world.slept == []  # settled by the upload's own answer: no wait, no poll


def test_still_processing_at_the_poll_is_settled_by_the_next_cycle(world: World) -> None:
    """Not ready at the poll: processing in the ledger; the next cycle reads its status
    once and settles it without uploading again."""
    _new_run(world, 14)
    world.strava.poll_answers[500] = [UploadStatus(500, PROCESSING, None, None, None)]
    assert world.cycle().outcomes == {}
    assert world.entry(14).outcome is UploadOutcome.PROCESSING
    report = world.cycle()
    assert report.outcomes == {UploadOutcome.UPLOADED: 1}
    assert world.strava.polls == [500, 500]
    assert len(world.strava.uploads) == 1


def test_failed_upload_waits_for_its_retry_time(world: World) -> None:
    """A refused upload is failed with a retry time; before it nothing is asked, after
    it the run is tried again."""
    _new_run(world, 15)
    world.strava.upload_answers.append(TransientError("Strava answered 503"))
    assert world.cycle().outcomes == {UploadOutcome.FAILED: 1}
    entry = world.entry(15)
    assert (entry.attempts, entry.next_retry_at) == (1, T0 + timedelta(minutes=2))
    world.later(timedelta(minutes=1))
    assert not world.cycle().outcomes
    assert len(world.strava.uploads) == 1
    world.later(timedelta(minutes=1))
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 1}
    assert world.entry(15).attempts == 2


def test_run_is_dead_after_the_last_attempt(world: World) -> None:
    """Every processing answer an error: dead after max_attempts, in the audit trail."""
    world.config = SyncConfig(wants_type=_runs, max_attempts=2)
    _new_run(world, 16)
    error = UploadStatus(0, "There was an error processing your activity.", None, None, None)
    world.strava.poll_answers = {500: [error], 501: [error]}
    assert world.cycle().outcomes == {UploadOutcome.FAILED: 1}
    world.later(timedelta(hours=1))
    assert world.cycle().outcomes == {UploadOutcome.DEAD: 1}
    assert world.entry(16).outcome is UploadOutcome.DEAD
    assert "upload.gave_up" in [e.kind for e in world.store.list_audit(USER)]
    world.later(timedelta(days=1))
    assert not world.cycle().outcomes


def test_manual_activity_is_skipped_without_download(world: World) -> None:
    """A manual activity has no file: skipped, nothing downloaded or asked of Strava."""
    _new_run(world, 17, manualActivity=True)
    assert world.cycle().outcomes == {UploadOutcome.SKIPPED: 1}
    assert (world.garmin.downloads, world.strava_built) == ([], 0)
    assert world.entry(17).detail == "manual activity: no file"


def test_rejected_file_is_skipped_and_never_uploaded(world: World) -> None:
    """A file the check refuses is skipped with the reason, never uploaded."""
    world.files.refuse.add(_new_run(world, 18))
    assert world.cycle().outcomes == {UploadOutcome.SKIPPED: 1}
    assert world.strava.uploads == []
    assert world.entry(18).detail == "file rejected: not a FIT file"


def test_garmin_outage_on_download_is_retried_never_dead(world: World) -> None:
    """Garmin failing a download is failed with a retry time, even past max_attempts."""
    world.config = SyncConfig(wants_type=_runs, max_attempts=1)
    _new_run(world, 19)
    world.garmin.download_errors[19] = TransientError("Garmin answered 502")
    world.cycle()
    world.later(timedelta(hours=1))
    world.cycle()
    entry = world.entry(19)
    assert (entry.outcome, entry.attempts) == (UploadOutcome.FAILED, 2)


def test_bad_listing_record_is_skipped_the_rest_goes_on(world: World) -> None:
    """A record that is no activity is recorded as skipped; the good one is uploaded."""
    _new_run(world, 20)
    world.garmin.records.append({"activityId": 21, "activityType": {}})
    report = world.cycle()
    assert report.outcomes == {UploadOutcome.SKIPPED: 1, UploadOutcome.UPLOADED: 1}
    assert world.entry(21).detail.startswith("invalid activity record")


def test_lease_held_elsewhere_skips_the_cycle(world: World) -> None:
    """Another runner's lease: no Garmin request, nothing written."""
    _new_run(world, 22)
    assert world.store.acquire_lease(USER, "other", now=T0, ttl_seconds=600)
    report = world.cycle()
    assert report.skipped_reason == "another runner holds this account's lease"
    assert world.garmin.lists == 0
    assert world.store.get_uploads(USER, [22]) == {}


def test_spent_budget_ends_the_cycle_and_loses_nothing(world: World) -> None:
    """RateLimited on upload: the cycle defers, the attempt is not counted, the next
    run is not tried; the next cycle uploads both."""
    _new_run(world, 23)
    _new_run(world, 24, start=RUN_START + timedelta(hours=2))
    until = T0 + timedelta(minutes=15)
    world.strava.upload_answers.append(RateLimited(until))
    report = world.cycle()
    assert report.ok
    assert report.deferred_until == until
    assert len(world.strava.uploads) == 1  # the second run was not tried
    assert world.entry(23).attempts == 0
    assert world.store.get_uploads(USER, [24]) == {}
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 2}


def test_garmin_429_backs_off_the_account(world: World) -> None:
    """Garmin's 429: no Garmin request until the backoff is over, said in the audit."""
    world.garmin.list_error = GarminRateLimited("429")
    report = world.cycle()
    assert not report.ok
    account = world.store.get_account(USER)
    assert account is not None
    assert account.garmin_backoff_until == T0 + timedelta(seconds=world.config.garmin_backoff_s)
    assert "garmin.rate_limited" in [e.kind for e in world.store.list_audit(USER)]
    assert world.cycle().skipped_reason.startswith("Garmin rate limit")
    assert world.garmin.lists == 1


@pytest.mark.parametrize(
    ("side", "status"),
    [("garmin", AccountStatus.NEEDS_GARMIN_LOGIN), ("strava", AccountStatus.NEEDS_STRAVA_AUTH)],
)
def test_auth_failure_parks_the_account_for_a_human(
    world: World, side: str, status: AccountStatus
) -> None:
    """A refused login marks the account for a human; later cycles do nothing."""
    _new_run(world, 25)
    if side == "garmin":
        world.garmin.list_error = GarminAuthError("tokens refused")
    else:
        world.strava.upload_answers.append(StravaAuthError("refresh token refused"))
    report = world.cycle()
    assert not report.ok
    account = world.store.get_account(USER)
    assert account is not None
    assert account.status is status
    lists = world.garmin.lists
    assert world.cycle().skipped_reason.startswith(f"account {status.value}")
    assert world.garmin.lists == lists


def test_interrupted_upload_found_by_external_id_is_uploaded(world: World) -> None:
    """An intent left by a crashed cycle whose upload reached Strava is reconciled to
    uploaded by our external_id, not uploaded again."""
    _new_run(world, 26)
    world.store.put_upload(
        LedgerEntry(
            user_id=USER,
            garmin_activity_id=26,
            external_id=external_id_for(26),
            outcome=UploadOutcome.PENDING,
            updated_at=T0 - timedelta(minutes=5),
            start_utc=RUN_START,
            attempts=1,
        )
    )
    ours = StravaActivity(
        activity_id=88,
        athlete_id=1,
        name="Run 26",
        sport_type="Run",
        start_utc=RUN_START,
        elapsed_seconds=1800,
        moving_seconds=None,
        distance_m=None,
        total_elevation_gain=None,
        external_id=external_id_for(26) + ".fit",
        upload_id=None,
        private=False,
        manual=False,
    )
    world.strava.listed.append(ours)
    assert world.cycle().outcomes == {UploadOutcome.UPLOADED: 1}
    assert world.strava.uploads == []
    assert world.entry(26).strava_activity_id == 88


def test_dry_run_writes_nothing_and_uploads_nothing(world: World) -> None:
    """A dry run reports what it would upload, and takes no lease and writes nothing."""
    _new_run(world, 27)
    report = sync_account(world.deps(), USER, dry_run=True)
    assert report.outcomes == {"would_upload": 1}
    assert (world.garmin.downloads, world.strava.uploads) == ([], [])
    assert world.store.get_uploads(USER, [27]) == {}
    account = world.store.get_account(USER)
    assert account is not None
    assert account.last_cycle_at is None


def test_paused_account_is_skipped(world: World) -> None:
    """A disabled account: no request at all."""
    account = world.store.get_account(USER)
    assert account is not None
    world.store.put_account(replace(account, enabled=False))
    assert world.cycle().skipped_reason
    assert world.garmin.lists == 0
