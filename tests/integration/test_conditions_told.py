"""Every condition of the catalogue, end to end: made to start through the real code
path (the daemon's sync job against the Garmin and Strava sandboxes, the real store
and queue), it is told exactly once, with its fix, however many cycles follow; made
to clear, exactly one recovery is told, and then nothing. The notifications go
through the real Apprise to a JSON catcher on 127.0.0.1 (json://)."""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fakes import Clock
from g2s_harness.notify_catchers import JsonCatcher
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import App, utc_now
from garmin2strava.domain.conditions import CONDITIONS
from garmin2strava.domain.models import AccountStatus, UploadOutcome
from garmin2strava.domain.webhook import WebhookEvent
from garmin2strava.entrypoints.cli import _store_fresh_garmin_tokens
from garmin2strava.entrypoints.daemon import schedule_sync
from garmin2strava.entrypoints.oauth import _store_tokens
from garmin2strava.entrypoints.telling import written_disks
from garmin2strava.services.account_control import retry_upload
from garmin2strava.services.conditions import sync_sight
from garmin2strava.services.mirror_subscription import remember_subscription
from garmin2strava.services.write_trouble import SPACE_FLOOR, WRITE_TROUBLE
from garmin2strava.settings import Settings

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
HOUR = timedelta(hours=1)
CYCLES = 3  # after each start and each clearing: nothing more is told


class Jobs:
    """Takes the scheduler's add_job and keeps each job to run by hand."""

    def __init__(self) -> None:
        self.jobs: dict[str, Callable[[], None]] = {}

    def add_job(self, func: Callable[[], None], *_: Any, id: str, **__: Any) -> None:  # noqa: A002 (apscheduler's name)
        self.jobs[id] = func


@dataclass
class World:
    """The daemon as `run` builds it (its sync job, its webhook queue, a mirror
    expected), the sandboxes, the app's clock and the catcher."""

    pair: SandboxPair
    app: App
    clock: Clock
    queue: SqliteEventQueue
    catcher: JsonCatcher
    open_app: Callable[[Settings], App]

    def job(self) -> Callable[[], None]:
        jobs = Jobs()
        sight = sync_sight(
            athlete_capacity=self.app.settings.strava_athlete_capacity,
            subscription_id_setting=self.app.settings.strava_subscription_id,
            queue=self.queue,
            mirror_expected=True,
            disks=written_disks(self.app.settings),
        )
        schedule_sync(self.app, jobs, sight)  # type: ignore[arg-type,unused-ignore]
        return jobs.jobs["sync"]

    def cycles(self, count: int = CYCLES, *, step: timedelta = timedelta(minutes=1)) -> None:
        job = self.job()
        for _ in range(count):
            job()
            self.clock.now += step

    def told(self) -> list[dict[str, Any]]:
        return [hit.body for hit in self.catcher.hits if hit.method == "POST"]

    def restart(self, **overrides: Any) -> None:
        """A new process on the same store file (settings changed by `overrides`)."""
        settings = self.app.settings.model_copy(update=overrides)
        self.app = self.open_app(settings)
        self.app.clock = self.clock


@pytest.fixture
def catcher() -> Iterator[JsonCatcher]:
    with JsonCatcher() as running:
        yield running


@pytest.fixture
def world(
    pair: SandboxPair,
    make_app: Callable[..., App],
    open_app: Callable[[Settings], App],
    catcher: JsonCatcher,
    tmp_path: Path,
) -> Iterator[World]:
    app = make_app(notify_urls=catcher.url("told"), max_attempts=2)
    clock = Clock(utc_now().replace(microsecond=0))
    app.clock = clock
    # As `get-token` leaves it: the athlete linked; as `webhook subscribe`: a subscription.
    account = app.store.get_account(USER)
    assert account is not None
    app.store.put_account(replace(account, strava_athlete_id=pair.athlete_id))
    app.store.link_athlete(pair.athlete_id, USER)
    remember_subscription(app.store, 4242, now=clock.now)
    queue = SqliteEventQueue(tmp_path / "g2s.sqlite3")
    for place in ("temp", "store", "space"):
        WRITE_TROUBLE.succeeded(place)
    try:
        yield World(pair, app, clock, queue, catcher, open_app)
    finally:
        queue.close()
        for left in ("temp", "store", "space"):
            WRITE_TROUBLE.succeeded(left)


def told_once_then_cleared_once(
    world: World,
    key: str,
    *,
    start: Callable[[], None],
    clear: Callable[[], None],
    user: str | None = USER,
) -> None:
    """The lifecycle every condition must have; `start` and `clear` run the cycles."""
    condition = CONDITIONS[key]
    world.cycles()
    assert world.told() == [], "something was told before the condition started"
    start()
    world.cycles()
    assert len(world.told()) == 1, [n["title"] for n in world.told()]
    (started,) = world.told()
    assert started["title"] == f"[garmin2strava] {key} started"
    assert started["type"] == str(condition.severity)
    fix = condition.fix.format(user=user or "")
    assert f"Fix: {fix}" in started["message"]
    if user is None:
        assert "For the whole installation." in started["message"]
    else:
        assert f"Account: {user}" in started["message"]
    clear()
    world.cycles()
    assert [n["title"] for n in world.told()] == [
        f"[garmin2strava] {key} started",
        f"[garmin2strava] {key} cleared",
    ]
    assert world.told()[1]["type"] == "success"
    world.cycles()
    assert len(world.told()) == 2


# -- the account's own ------------------------------------------------------------------
def test_garmin_refusing_the_tokens(world: World) -> None:
    def start() -> None:
        world.pair.garmin.revoke_all_tokens()

    def clear() -> None:  # what `garmin login` stores
        _store_fresh_garmin_tokens(world.app, USER, world.pair.garmin.issue_tokens())
        account = world.app.store.get_account(USER)
        assert account is not None
        world.app.store.put_account(replace(account, status=AccountStatus.ACTIVE))

    told_once_then_cleared_once(world, "garmin.tokens_refused", start=start, clear=clear)


def test_strava_refusing_the_authorization(world: World) -> None:
    def start() -> None:
        seed_run(world.pair, 1801, start_utc=world.clock.now - 2 * HOUR)
        world.pair.strava.revoke(world.pair.athlete_id)

    def clear() -> None:  # what `get-token` stores after a fresh consent
        strava = world.pair.strava
        refresh = strava.add_athlete(world.pair.athlete_id)
        tokens = bootstrap_tokens_from_refresh_token(
            strava.client_id, strava.client_secret, refresh, strava.base_url
        )
        _store_tokens(world.app, USER, tokens, world.pair.athlete_id)

    told_once_then_cleared_once(world, "strava.authorization_refused", start=start, clear=clear)


def test_an_upload_going_dead(world: World) -> None:
    def start() -> None:
        seed_run(world.pair, 1802, start_utc=world.clock.now - 2 * HOUR)
        world.pair.strava.fail_next("upload", 500, times=2)  # G2S_MAX_ATTEMPTS=2
        world.cycles(2, step=2 * HOUR)  # the second attempt waits for its retry time
        entry = world.app.store.get_uploads(USER, [1802])[1802]
        assert entry.outcome is UploadOutcome.DEAD

    def clear() -> None:  # `uploads retry`
        assert retry_upload(world.app.store, USER, 1802, world.clock.now)

    told_once_then_cleared_once(world, "uploads.dead", start=start, clear=clear)
    assert "Given up: Run (" in world.told()[0]["message"]  # by its Garmin name and date
    assert "Garmin 1802)" in world.told()[0]["message"]


def test_a_long_garmin_backoff(world: World) -> None:
    def backoff_until() -> datetime:
        account = world.app.store.get_account(USER)
        assert account is not None
        assert account.garmin_backoff_until is not None
        return account.garmin_backoff_until

    def start() -> None:
        """Each back-off ends in a 429 again (one spell) until it lasts 12 hours; the
        cycles that follow fall inside the last back-off: no Garmin request."""
        began = world.clock.now
        while world.clock.now - began <= 12 * HOUR:
            world.pair.garmin.fail_next("list", 429)
            world.cycles(1)
            world.clock.now = backoff_until() + timedelta(minutes=1)
        world.pair.garmin.fail_next("list", 429)

    def clear() -> None:  # the back-off over, Garmin answers
        world.clock.now = backoff_until() + timedelta(minutes=1)

    told_once_then_cleared_once(world, "garmin.backoff_long", start=start, clear=clear)


def test_garmin_refusing_this_network(world: World) -> None:
    """Told at the first 403 (no waiting: no login can help), cleared by Garmin's next
    answer after the back-off."""

    def start() -> None:
        world.pair.garmin.refuse_network()

    def clear() -> None:
        world.pair.garmin.refuse_network(refused=False)
        account = world.app.store.get_account(USER)
        assert account is not None
        assert account.status is AccountStatus.ACTIVE
        assert account.garmin_refused_until is not None
        world.clock.now = account.garmin_refused_until + timedelta(minutes=1)

    told_once_then_cleared_once(world, "garmin.network_refused", start=start, clear=clear)
    assert "G2S_GARMIN_PROXY" in world.told()[0]["message"]


# -- the installation --------------------------------------------------------------------
def test_the_strava_application_going_inactive(world: World) -> None:
    def start() -> None:
        seed_run(world.pair, 1803, start_utc=world.clock.now - 2 * HOUR)
        world.pair.strava.application_inactive = True

    def clear() -> None:  # the owner renewed; the next window's probe finds it
        world.pair.strava.application_inactive = False
        world.clock.now += 20 * timedelta(minutes=1)

    told_once_then_cleared_once(world, "strava.app_inactive", start=start, clear=clear, user=None)


def test_dead_letters(world: World) -> None:
    def start() -> None:
        event = WebhookEvent("activity", 77, "create", world.pair.athlete_id, 4242, 1_765_000_000)
        world.queue.enqueue(event, now=world.clock.now)
        (group,) = world.queue.claim(now=world.clock.now)
        world.queue.dead_letter(group, now=world.clock.now, error="Strava said 500")

    def clear() -> None:  # `events retry --all`, then the worker mirrors it
        for dead in world.queue.list_dead():
            assert world.queue.retry_dead(dead.queue_id, now=world.clock.now)
        for group in world.queue.claim(now=world.clock.now):
            world.queue.complete(group, now=world.clock.now)

    told_once_then_cleared_once(world, "mirror.dead_letters", start=start, clear=clear, user=None)


def test_no_subscription_while_the_mirror_runs(world: World) -> None:
    def start() -> None:  # `webhook unsubscribe`
        remember_subscription(world.app.store, None, now=world.clock.now)

    def clear() -> None:  # `webhook subscribe`
        remember_subscription(world.app.store, 4243, now=world.clock.now)

    told_once_then_cleared_once(
        world, "webhook.subscription_unknown", start=start, clear=clear, user=None
    )


def test_strava_unreachable_for_an_hour_while_a_run_waits(world: World) -> None:
    def start() -> None:
        seed_run(world.pair, 1804, start_utc=world.clock.now - 2 * HOUR)
        # 5xx for 70 minutes, cycle after cycle, and for the cycles that follow.
        world.pair.strava.fail_next("list", 503, times=3 + CYCLES)
        world.cycles(3, step=35 * timedelta(minutes=1))

    def clear() -> None:
        """Strava answers again: the run goes up (no failure is left to answer)."""

    told_once_then_cleared_once(world, "strava.unreachable", start=start, clear=clear, user=None)
    assert world.app.store.get_uploads(USER, [1804])[1804].outcome is UploadOutcome.UPLOADED


def test_the_days_budget_nearly_spent_is_a_warning_cleared_at_midnight(world: World) -> None:
    def start() -> None:
        seed_run(world.pair, 1805, start_utc=world.clock.now - 2 * HOUR)
        world.pair.strava.set_usage(short_all=0, daily_all=1850, short_read=0, daily_read=10)

    def clear() -> None:
        world.clock.now += timedelta(days=1)

    told_once_then_cleared_once(
        world, "strava.budget_nearly_spent", start=start, clear=clear, user=None
    )


def test_a_full_temporary_directory(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object, **__: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    def start() -> None:
        seed_run(world.pair, 1806, start_utc=world.clock.now - 2 * HOUR)
        monkeypatch.setattr(tempfile, "mkdtemp", full)  # the operating system's answer

    def clear() -> None:
        monkeypatch.undo()
        world.clock.now += 2 * HOUR  # the failed run's retry time

    told_once_then_cleared_once(world, "store.unwritable", start=start, clear=clear, user=None)


def test_a_nearly_full_disk_before_any_write_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No run waits, so nothing writes the temporary directory and the store's writes
    still work (SQLite's reused pages): only the look at the free space sees it."""
    real = shutil.disk_usage

    def nearly_full(path: str | Path) -> Any:  # the operating system's answer
        return real(path)._replace(free=SPACE_FLOOR - 1)

    def start() -> None:
        monkeypatch.setattr(shutil, "disk_usage", nearly_full)

    def clear() -> None:  # the owner freed some space
        monkeypatch.undo()

    told_once_then_cleared_once(world, "store.unwritable", start=start, clear=clear, user=None)
    started = world.told()[0]["message"]
    assert f"the disk of the store ({world.app.settings.db_path.parent}) has 63 MiB free" in started
    assert f"the disk of the temporary directory ({tempfile.gettempdir()})" in started


def test_more_accounts_than_the_athlete_capacity(world: World) -> None:
    def start() -> None:  # a restart with the capacity below the accounts
        world.restart(strava_athlete_capacity=0)

    def clear() -> None:  # raised again (the Extended tier)
        world.restart(strava_athlete_capacity=10)

    told_once_then_cleared_once(
        world, "strava.athlete_capacity_exceeded", start=start, clear=clear, user=None
    )


def test_every_condition_has_its_test_here() -> None:
    """Each key goes through the lifecycle here at least once (store.unwritable twice:
    a write that failed, a disk nearly full)."""
    source = Path(__file__).read_text(encoding="utf-8")
    lifecycles = re.findall(r'told_once_then_cleared_once\(\s*world,\s*"([^"]+)"', source)
    assert sorted(set(lifecycles)) == sorted(CONDITIONS)
