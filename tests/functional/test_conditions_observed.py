"""services/conditions.py: each catalogue key is observed when its state holds in the
real SQLite store (and queue), and not when it does not; each runner's sight checks
the keys it can see and no others."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.budget import RateBudget
from garmin2strava.domain.conditions import CONDITIONS, Observation
from garmin2strava.domain.models import Account, AccountStatus, LedgerEntry, UploadOutcome
from garmin2strava.domain.strava_outage import STRAVA_OUTAGE_KEY, StravaOutage
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.services.conditions import (
    ACCOUNT_KEYS,
    LedgerGate,
    Sight,
    maintenance_sight,
    mirror_sight,
    observe,
    sync_sight,
)
from garmin2strava.services.mirror_subscription import remember_subscription
from garmin2strava.services.notify import open_conditions, tell
from garmin2strava.services.write_trouble import SPACE_FLOOR, Disk, WriteTrouble, is_disk_trouble

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
USER = "u1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.sqlite3", AesGcmCipher(bytes(range(32)))) as opened:
        opened.put_account(Account(USER, strava_athlete_id=501, created_at=NOW))
        yield opened


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteEventQueue]:
    q = SqliteEventQueue(tmp_path / "store.sqlite3")
    yield q
    q.close()


def seen(
    store: SqliteStore, sight: Sight, now: datetime = NOW
) -> dict[tuple[str, str | None], Observation]:
    observed, checked = observe(store, sight, now=now)
    assert {(o.key, o.user_id) for o in observed} <= checked  # only what was looked at
    return {(o.key, o.user_id): o for o in observed}


def sight(**more: object) -> Sight:
    """The sync cycle's sight with its own write notes (not the process's)."""
    return Sight(accounts=True, write_trouble=WriteTrouble(), **more)  # type: ignore[arg-type]


def set_status(store: SqliteStore, status: AccountStatus, detail: str) -> None:
    account = store.get_account(USER)
    assert account is not None
    store.put_account(Account(USER, status=status, status_detail=detail, strava_athlete_id=501))


# -- nothing wrong -----------------------------------------------------------------------
def test_a_healthy_installation_shows_nothing(store: SqliteStore) -> None:
    assert seen(store, sight()) == {}


# -- the account's own ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "key"),
    [
        (AccountStatus.NEEDS_GARMIN_LOGIN, "garmin.tokens_refused"),
        (AccountStatus.NEEDS_STRAVA_AUTH, "strava.authorization_refused"),
    ],
)
def test_a_refused_login_is_seen_from_the_account_status(
    store: SqliteStore, status: AccountStatus, key: str
) -> None:
    set_status(store, status, "Garmin answered 401")
    observed = seen(store, sight())
    assert set(observed) == {(key, USER)}
    assert observed[key, USER].detail == "Garmin answered 401"
    set_status(store, AccountStatus.ACTIVE, "")
    assert seen(store, sight()) == {}


def test_a_revoked_athlete_is_no_refused_authorization(store: SqliteStore) -> None:
    """The athlete disconnected on purpose: nothing for the owner to fix."""
    set_status(store, AccountStatus.DISCONNECTED, "deauthorized")
    assert seen(store, sight()) == {}


def dead_entry(
    garmin_id: int, name: str, *, start: datetime, outcome: UploadOutcome
) -> LedgerEntry:
    return LedgerEntry(
        USER,
        garmin_id,
        f"g2s_{garmin_id}",
        outcome,
        updated_at=start + timedelta(hours=2),
        activity_name=name,
        start_utc=start,
        attempts=5,
    )


def test_dead_uploads_are_named_by_garmin_name_and_date(store: SqliteStore) -> None:
    store.put_upload(
        dead_entry(11, "Morning Run", start=NOW - timedelta(days=2), outcome=UploadOutcome.DEAD)
    )
    store.put_upload(
        dead_entry(12, "Evening Ride", start=NOW - timedelta(days=1), outcome=UploadOutcome.DEAD)
    )
    store.put_upload(
        dead_entry(13, "Fine Run", start=NOW - timedelta(days=1), outcome=UploadOutcome.UPLOADED)
    )
    observed = seen(store, sight())
    assert set(observed) == {("uploads.dead", USER)}
    dead = observed["uploads.dead", USER]
    assert "Morning Run (2026-12-05, Garmin 11)" in dead.detail
    assert "Evening Ride (2026-12-06, Garmin 12)" in dead.detail
    assert "Fine Run" not in dead.detail
    assert dead.since == NOW - timedelta(days=2) + timedelta(hours=2)  # the first to die
    for garmin_id in (11, 12):  # `uploads retry` makes them pending again
        entry = dead_entry(garmin_id, "x", start=NOW, outcome=UploadOutcome.UPLOADED)
        store.put_upload(entry)
    assert seen(store, sight()) == {}


def test_a_garmin_backoff_is_long_after_twelve_hours_of_one_spell(store: SqliteStore) -> None:
    began = NOW - timedelta(hours=13)
    store.put_account(
        Account(
            USER,
            strava_athlete_id=501,
            garmin_backoff_since=began,
            garmin_backoff_until=NOW + timedelta(hours=5),
        )
    )
    assert seen(store, sight(), NOW - timedelta(hours=2)) == {}  # 11 hours: not yet
    observed = seen(store, sight())
    assert set(observed) == {("garmin.backoff_long", USER)}
    assert observed["garmin.backoff_long", USER].since == began
    store.put_account(Account(USER, strava_athlete_id=501, garmin_backoff_until=NOW))
    assert seen(store, sight()) == {}  # Garmin answered: the spell is over


# -- the installation --------------------------------------------------------------------
def test_an_inactive_application_is_seen_with_its_start(store: SqliteStore) -> None:
    began = NOW - timedelta(minutes=30)
    access = StravaAppAccess().deactivated(began, "Application Status Inactive")
    store.put_app_state(APP_ACCESS_KEY, access.to_dict())
    observed = seen(store, sight())
    assert set(observed) == {("strava.app_inactive", None)}
    assert observed["strava.app_inactive", None].since == began
    store.put_app_state(APP_ACCESS_KEY, access.recovered(NOW).to_dict())
    assert seen(store, sight()) == {}


def test_strava_failing_for_an_hour_of_requests_is_unreachable(store: SqliteStore) -> None:
    began = NOW - timedelta(minutes=70)
    outage = StravaOutage().failed(began, "Strava answered 502")
    store.put_app_state(STRAVA_OUTAGE_KEY, outage.to_dict())
    assert seen(store, sight()) == {}  # one failure, 70 minutes ago: no hour of failing
    outage = outage.failed(NOW - timedelta(minutes=5), "Strava answered 503")
    store.put_app_state(STRAVA_OUTAGE_KEY, outage.to_dict())
    observed = seen(store, sight())
    assert set(observed) == {("strava.unreachable", None)}
    assert observed["strava.unreachable", None].since == began
    assert "Strava answered 503" in observed["strava.unreachable", None].detail
    store.put_app_state(STRAVA_OUTAGE_KEY, StravaOutage().to_dict())  # Strava answered
    assert seen(store, sight()) == {}


def test_a_lone_failure_days_after_the_last_starts_a_new_spell(store: SqliteStore) -> None:
    """Nothing asked Strava for days after one failure: the next lone failure is a new
    spell, not an outage of days."""
    outage = StravaOutage().failed(NOW - timedelta(days=3), "Strava answered 502")
    outage = outage.failed(NOW, "Strava answered 503")
    assert outage.since == NOW
    store.put_app_state(STRAVA_OUTAGE_KEY, outage.to_dict())
    assert seen(store, sight()) == {}


@pytest.mark.parametrize(("daily", "read_daily"), [(1800, 10), (900, 900)])
def test_a_budget_nine_tenths_spent_is_a_warning_until_midnight(
    store: SqliteStore, daily: int, read_daily: int
) -> None:
    below = RateBudget(daily_usage=1799, read_daily_usage=899, observed_at=NOW)
    store.put_app_state("strava_budget", below.to_dict())
    assert seen(store, sight()) == {}
    spent = replace(below, daily_usage=daily, read_daily_usage=read_daily)
    store.put_app_state("strava_budget", spent.to_dict())
    observed = seen(store, sight())
    assert set(observed) == {("strava.budget_nearly_spent", None)}
    assert CONDITIONS["strava.budget_nearly_spent"].severity == "warning"
    assert seen(store, sight(), NOW + timedelta(days=1)) == {}  # the day's budget reset


def test_more_connected_accounts_than_the_capacity(store: SqliteStore) -> None:
    store.put_account(Account("u2", strava_athlete_id=502))
    store.put_account(Account("u3", strava_athlete_id=None))  # not connected: not counted
    assert seen(store, sight(athlete_capacity=2)) == {}
    observed = seen(store, sight(athlete_capacity=1))
    assert set(observed) == {("strava.athlete_capacity_exceeded", None)}
    assert "2 connected accounts" in observed["strava.athlete_capacity_exceeded", None].detail


def event(n: int) -> WebhookEvent:
    return WebhookEvent("activity", 1000 + n, "create", 501, 7, 1_765_000_000 + n)


def test_dead_letters_in_the_local_queue(store: SqliteStore, queue: SqliteEventQueue) -> None:
    with_queue = sync_sight(athlete_capacity=10, queue=queue)
    assert seen(store, with_queue) == {}
    queue.enqueue(event(1), now=NOW - timedelta(hours=3))
    groups = queue.claim(now=NOW - timedelta(hours=3))
    queue.dead_letter(groups[0], now=NOW - timedelta(hours=2), error="Strava said 500")
    observed = seen(store, with_queue)
    assert ("mirror.dead_letters", None) in observed
    assert observed["mirror.dead_letters", None].since == NOW - timedelta(hours=2)
    assert queue.retry_dead(queue.list_dead()[0].queue_id, now=NOW)
    assert ("mirror.dead_letters", None) not in seen(store, with_queue)


def test_dead_letters_on_aws_come_from_the_queue_depth(store: SqliteStore) -> None:
    depth = [0]
    aws = maintenance_sight(
        athlete_capacity=10, subscription_id_setting=None, dead_letter_depth=lambda: depth[0]
    )
    remember_subscription(store, 4242, now=NOW)
    assert seen(store, aws) == {}
    depth[0] = 3
    observed = seen(store, aws)
    assert set(observed) == {("mirror.dead_letters", None)}
    assert observed["mirror.dead_letters", None].detail == "3 dead-lettered events."


def test_an_unknown_subscription_matters_only_where_a_mirror_runs(store: SqliteStore) -> None:
    mirrored = sight(mirror_expected=True)
    assert set(seen(store, mirrored)) == {("webhook.subscription_unknown", None)}
    assert seen(store, sight()) == {}  # `sync` alone: no mirror expected, not looked at
    assert seen(store, sight(mirror_expected=True, subscription_id_setting=99)) == {}
    remember_subscription(store, 4242, now=NOW)
    assert seen(store, mirrored) == {}
    remember_subscription(store, None, now=NOW)  # `webhook unsubscribe`
    assert set(seen(store, mirrored)) == {("webhook.subscription_unknown", None)}


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.EACCES, "Permission denied"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("attempt to write a readonly database"),
    ],
)
def test_an_unwritable_disk_is_seen_until_a_write_works(
    store: SqliteStore, error: Exception
) -> None:
    trouble = WriteTrouble()
    mine = Sight(accounts=True, write_trouble=trouble)
    assert trouble.failed("temp", error, NOW - timedelta(minutes=3))
    assert trouble.failed("temp", error, NOW)  # still the same spell
    observed = seen(store, mine)
    assert set(observed) == {("store.unwritable", None)}
    assert observed["store.unwritable", None].since == NOW - timedelta(minutes=3)
    assert "temporary directory" in observed["store.unwritable", None].detail
    trouble.succeeded("temp")
    assert seen(store, mine) == {}


MiB = 1024 * 1024


class Disks:
    """The free space the operating system would report for each directory, and
    the directories asked about."""

    def __init__(self, **free_mib: int) -> None:
        self.free = {Path(f"/{name}"): mib * MiB for name, mib in free_mib.items()}
        self.asked: list[Path] = []

    def __call__(self, directory: Path) -> int:
        self.asked.append(directory)
        if directory not in self.free:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(directory))
        return self.free[directory]

    def sight(self, trouble: WriteTrouble) -> Sight:
        disks = (
            Disk("the store", Path("/data")),
            Disk("the temporary directory", Path("/scratch")),
        )
        return replace(
            sync_sight(athlete_capacity=10, disks=disks), write_trouble=trouble, free=self
        )


def test_a_nearly_full_disk_is_seen_before_any_write_fails(store: SqliteStore) -> None:
    trouble = WriteTrouble()
    disks = Disks(data=3, scratch=900)
    assert set(seen(store, disks.sight(trouble), NOW - timedelta(minutes=2))) == {
        ("store.unwritable", None)
    }
    observed = seen(store, disks.sight(trouble))
    assert observed["store.unwritable", None].since == NOW - timedelta(minutes=2)
    assert observed["store.unwritable", None].detail == (
        "free space: the disk of the store (/data) has 3 MiB free, under the 64 MiB "
        "a run's file and the store's growth need"
    )
    assert disks.asked == [Path("/data"), Path("/scratch")] * 2
    disks.free[Path("/data")] = SPACE_FLOOR
    assert seen(store, disks.sight(trouble)) == {}


def test_a_write_that_works_keeps_low_space_and_room_keeps_a_failed_write(
    store: SqliteStore,
) -> None:
    trouble = WriteTrouble()
    disks = Disks(data=900, scratch=1)
    trouble.failed("store", sqlite3.OperationalError("database or disk is full"), NOW)
    detail = seen(store, disks.sight(trouble))["store.unwritable", None].detail
    assert "free space: the disk of the temporary directory (/scratch) has 1 MiB free" in detail
    assert "the store: OperationalError: database or disk is full" in detail
    trouble.succeeded("store")  # a recorded cycle
    assert (
        "(/scratch) has 1 MiB free"
        in seen(store, disks.sight(trouble))["store.unwritable", None].detail
    )
    trouble.failed("temp", OSError(errno.ENOSPC, "No space left on device"), NOW)
    disks.free[Path("/scratch")] = 900 * MiB  # room again, the failed directory not yet retried
    assert seen(store, disks.sight(trouble))["store.unwritable", None].detail == (
        "the temporary directory: OSError: No space left on device"
    )
    trouble.succeeded("temp")
    assert seen(store, disks.sight(trouble)) == {}


def test_a_directory_gone_is_seen_and_observing_goes_on(store: SqliteStore) -> None:
    trouble = WriteTrouble()
    disks = Disks(data=900)  # no /scratch
    store.put_account(
        replace(store.get_account(USER) or Account(USER), status=AccountStatus.NEEDS_STRAVA_AUTH)
    )
    observed = seen(store, disks.sight(trouble))
    assert set(observed) == {("store.unwritable", None), ("strava.authorization_refused", USER)}
    assert observed["store.unwritable", None].detail == (
        "free space: the disk of the temporary directory (/scratch) cannot be looked at "
        "(No such file or directory)"
    )


def test_the_runners_that_write_nothing_of_their_own_look_at_no_disk(
    store: SqliteStore, queue: SqliteEventQueue
) -> None:
    disks = Disks()  # any look would be seen as a directory gone
    store_disk = (Disk("the store", Path("/data")),)
    aws = maintenance_sight(
        athlete_capacity=10, subscription_id_setting=None, dead_letter_depth=lambda: 0
    )
    served = mirror_sight(athlete_capacity=10, subscription_id_setting=None, queue=queue)
    for runner in (aws, served):
        assert ("store.unwritable", None) not in checked_keys(
            store, replace(runner, free=disks, disks=store_disk)
        )
    assert disks.asked == []


def test_other_errors_are_no_disk_trouble() -> None:
    assert not is_disk_trouble(OSError(errno.ECONNREFUSED, "Connection refused"))
    assert not is_disk_trouble(sqlite3.OperationalError("no such table: accounts"))
    assert not WriteTrouble().failed("store", ValueError("bad data"), NOW)


# -- who checks what ---------------------------------------------------------------------
APP_KEYS_SEEN_FROM_THE_STORE = {
    "strava.app_inactive",
    "strava.unreachable",
    "strava.budget_nearly_spent",
    "strava.athlete_capacity_exceeded",
}


def checked_keys(store: SqliteStore, looking: Sight) -> set[tuple[str, str | None]]:
    return observe(store, looking, now=NOW)[1]


def test_the_sync_cycle_checks_every_account_and_its_own_writes(
    store: SqliteStore, queue: SqliteEventQueue
) -> None:
    store.put_account(Account("u2"))
    daemon = sync_sight(athlete_capacity=10, queue=queue, mirror_expected=True)
    app = APP_KEYS_SEEN_FROM_THE_STORE | {
        "store.unwritable",
        "mirror.dead_letters",
        "webhook.subscription_unknown",
    }
    accounts = {(key, user) for key in ACCOUNT_KEYS for user in (USER, "u2")}
    assert checked_keys(store, daemon) == accounts | {(key, None) for key in app}
    assert app | set(ACCOUNT_KEYS) == set(CONDITIONS)  # the daemon looks at every key
    # `sync` (and the Lambda sync): no queue of its own, no mirror expected.
    alone = sync_sight(athlete_capacity=10)
    assert checked_keys(store, alone) == accounts | {
        (key, None) for key in APP_KEYS_SEEN_FROM_THE_STORE | {"store.unwritable"}
    }


def test_the_maintenance_function_checks_no_account_and_no_writes_of_its_own(
    store: SqliteStore,
) -> None:
    aws = maintenance_sight(
        athlete_capacity=10, subscription_id_setting=None, dead_letter_depth=lambda: 0
    )
    assert checked_keys(store, aws) == {
        (key, None)
        for key in APP_KEYS_SEEN_FROM_THE_STORE
        | {"mirror.dead_letters", "webhook.subscription_unknown"}
    }


def test_observing_makes_no_write(store: SqliteStore, tmp_path: Path) -> None:
    """Observing reads only: the store file is the same bytes after it."""
    set_status(store, AccountStatus.NEEDS_GARMIN_LOGIN, "401")
    before = (tmp_path / "store.sqlite3").read_bytes()
    seen(store, sight(mirror_expected=True))
    assert (tmp_path / "store.sqlite3").read_bytes() == before


def test_a_queue_that_cannot_say_leaves_dead_letters_unchecked(store: SqliteStore) -> None:
    def unreachable() -> int:
        raise ConnectionError("SQS is down")

    aws = maintenance_sight(
        athlete_capacity=10, subscription_id_setting=None, dead_letter_depth=unreachable
    )
    _, checked = observe(store, aws, now=NOW)
    assert ("mirror.dead_letters", None) not in checked  # neither opens nor clears
    assert ("webhook.subscription_unknown", None) in checked  # the rest is still seen


def test_the_readme_lists_every_key_with_its_meaning_and_fix() -> None:
    """README "Being told": one row per catalogue key, its words as the notification's."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Being told", 1)[1].split("\n## ", 1)[0]
    for condition in CONDITIONS.values():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{condition.key}`"))
        assert condition.meaning in row
        assert condition.fix.format(user="ID") in row


def test_a_ledger_gate_reads_each_ledger_at_most_every_interval(store: SqliteStore) -> None:
    """Where the ledger costs (DynamoDB, the Lambda sync), uploads.dead is looked at every
    15 minutes per account: between looks it is not checked (neither opens nor clears)."""
    store.put_upload(dead_entry(21, "Long Run", start=NOW, outcome=UploadOutcome.DEAD))
    gated = sync_sight(athlete_capacity=10, ledger_gate=LedgerGate(timedelta(minutes=15)))
    observed, checked = observe(store, gated, now=NOW)
    assert ("uploads.dead", USER) in checked
    assert [o.key for o in observed] == ["uploads.dead"]
    observed, checked = observe(store, gated, now=NOW + timedelta(minutes=14))
    assert ("uploads.dead", USER) not in checked
    assert ("garmin.tokens_refused", USER) in checked  # the account's state: every time
    assert observed == []
    _, checked = observe(store, gated, now=NOW + timedelta(minutes=15))
    assert ("uploads.dead", USER) in checked


def test_a_paused_account_neither_goes_on_with_nor_ends_a_garmin_spell(
    store: SqliteStore,
) -> None:
    """Garmin's back-off and refusal are not looked at while the account is paused, so
    pausing tells no false clearing and resuming no second start."""
    account = store.get_account(USER)
    assert account is not None
    store.put_account(
        replace(account, garmin_refused_since=NOW - timedelta(hours=1), enabled=False)
    )
    _observed, checked = observe(store, sight(), now=NOW)
    assert ("garmin.network_refused", USER) not in checked
    assert ("garmin.backoff_long", USER) not in checked
    assert ("garmin.tokens_refused", USER) in checked


def test_the_conditions_of_a_removed_account_end_with_it(store: SqliteStore) -> None:
    """An account removed with a condition open: the condition is looked at and not seen,
    so it clears (told once) instead of staying open for good."""
    channel = Recorder()
    set_status(store, AccountStatus.NEEDS_GARMIN_LOGIN, "Garmin answered 401")
    observed, checked = observe(store, sight(), now=NOW)
    tell(store, channel, observed, checked, now=NOW, owner="t", retention_days=7)
    assert channel.titles == ["[garmin2strava] garmin.tokens_refused started"]
    store.delete_account(USER)
    observed, checked = observe(store, sight(), now=NOW + timedelta(minutes=1))
    assert ("garmin.tokens_refused", USER) in checked
    tell(
        store,
        channel,
        observed,
        checked,
        now=NOW + timedelta(minutes=1),
        owner="t",
        retention_days=7,
    )
    assert channel.titles[-1] == "[garmin2strava] garmin.tokens_refused cleared"
    assert open_conditions(store) == []


class Recorder:
    """ports.NotifyChannel that records what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    @property
    def titles(self) -> list[str]:
        return [title for title, _body, _type in self.sent]

    def send(self, title: str, body: str, notify_type: str) -> bool:
        self.sent.append((title, body, notify_type))
        return True
