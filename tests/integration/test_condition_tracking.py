"""The tracking the conditions need that did not exist before them, kept by the code
that meets each failure: Strava's outage (the adapter), the start of a Garmin back-off
spell (the cycle), an unwritable temporary directory or store (the cycle, sync_all).
The real app against both sandboxes on loopback; time moves through the app's clock."""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable
from datetime import timedelta

import pytest

from fakes import Clock
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, utc_now
from garmin2strava.domain.models import Account, UploadOutcome
from garmin2strava.domain.strava_outage import STRAVA_OUTAGE_KEY, StravaOutage
from garmin2strava.services.conditions import observe, sync_sight
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.services.write_trouble import WRITE_TROUBLE

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
HOUR = timedelta(hours=1)


def cycle(app: App) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps)
    return report


def account(app: App) -> Account:
    found = app.store.get_account(USER)
    assert found is not None
    return found


def keys_seen(app: App) -> set[str]:
    sight = sync_sight(athlete_capacity=10)
    return {o.key for o in observe(app.store, sight, now=app.clock())[0]}


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    made = make_app()
    made.clock = Clock(utc_now())
    return made


@pytest.fixture(autouse=True)
def no_write_trouble_left() -> None:
    """The process's notes start and end empty (other tests share the process)."""
    for place in ("temp", "store", "space"):
        WRITE_TROUBLE.succeeded(place)


def test_strava_failing_while_a_run_waits_marks_an_outage_its_answer_ends(
    pair: SandboxPair, app: App
) -> None:
    seed_run(pair, 1301, start_utc=app.clock() - 2 * HOUR)
    clock = app.clock
    assert isinstance(clock, Clock)
    began = clock.now
    pair.strava.fail_next("list", 503)
    assert "retried next cycle" in cycle(app).error
    outage = StravaOutage.from_dict(app.store.get_app_state(STRAVA_OUTAGE_KEY))
    assert (outage.since, outage.failures, outage.reason) == (began, 1, "Strava answered 503")
    assert "strava.unreachable" not in keys_seen(app)  # not an hour yet

    clock.now += HOUR + timedelta(minutes=1)
    pair.strava.fail_next("list", 502)
    cycle(app)
    outage = StravaOutage.from_dict(app.store.get_app_state(STRAVA_OUTAGE_KEY))
    assert outage.since == began
    assert outage.failures == 2
    assert "strava.unreachable" in keys_seen(app)

    clock.now += timedelta(minutes=1)
    assert cycle(app).ok  # Strava answers: the run is uploaded and the outage is over
    assert not StravaOutage.from_dict(app.store.get_app_state(STRAVA_OUTAGE_KEY)).failing
    assert "strava.unreachable" not in keys_seen(app)
    assert app.store.get_uploads(USER, [1301])[1301].outcome is UploadOutcome.UPLOADED


def test_an_idle_cycle_marks_nothing_and_reads_no_strava(pair: SandboxPair, app: App) -> None:
    cycle(app)
    assert app.store.get_app_state(STRAVA_OUTAGE_KEY) is None
    assert pair.strava_total() == 0


def test_a_garmin_backoff_spell_begins_at_its_first_429_and_ends_at_an_answer(
    pair: SandboxPair, app: App
) -> None:
    clock = app.clock
    assert isinstance(clock, Clock)
    began = clock.now
    pair.garmin.fail_next("list", 429)
    cycle(app)
    first = account(app)
    assert first.garmin_backoff_since == began
    assert first.garmin_backoff_until is not None

    clock.now = first.garmin_backoff_until + timedelta(minutes=1)
    pair.garmin.fail_next("list", 429)  # Garmin refuses again: the same spell
    cycle(app)
    second = account(app)
    assert second.garmin_backoff_since == began
    assert second.garmin_backoff_until is not None
    assert second.garmin_backoff_until > first.garmin_backoff_until
    assert "garmin.backoff_long" not in keys_seen(app)
    clock.now = began + timedelta(hours=12, minutes=1)
    assert "garmin.backoff_long" in keys_seen(app)

    clock.now = max(clock.now, second.garmin_backoff_until) + timedelta(minutes=1)
    cycle(app)  # Garmin answers
    assert account(app).garmin_backoff_since is None
    assert account(app).garmin_backoff_until == second.garmin_backoff_until  # as before
    assert "garmin.backoff_long" not in keys_seen(app)


def test_a_full_temporary_directory_is_noted_and_a_working_one_clears_it(
    pair: SandboxPair, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_run(pair, 1401, start_utc=app.clock() - 2 * HOUR)

    def full(*_: object, **__: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)  # the operating system's answer
    cycle(app)
    assert app.store.get_uploads(USER, [1401])[1401].outcome is UploadOutcome.FAILED
    assert "store.unwritable" in keys_seen(app)
    assert "temp" in WRITE_TROUBLE.current()

    monkeypatch.undo()
    app.clock.now += HOUR  # type: ignore[attr-defined]
    cycle(app)
    assert app.store.get_uploads(USER, [1401])[1401].outcome is UploadOutcome.UPLOADED
    assert "store.unwritable" not in keys_seen(app)


def test_a_read_only_store_is_noted_by_sync_all_and_a_recorded_cycle_clears_it(app: App) -> None:
    store = app.store
    assert isinstance(store, SqliteStore)
    connection = (
        store._rows.conn
    )  # SQLite's own switch: every write is refused as on a read-only disk
    connection.execute("PRAGMA query_only = 1")
    report = cycle(app)
    assert not report.ok
    assert "readonly database" in report.error
    assert "store" in WRITE_TROUBLE.current()
    assert "store.unwritable" in keys_seen(app)

    connection.execute("PRAGMA query_only = 0")
    assert cycle(app).ok
    assert "store.unwritable" not in keys_seen(app)
