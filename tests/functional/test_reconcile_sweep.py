"""The reconciliation sweep (services/reconcile.py): a delete or rename Strava never
announced for an activity that started long before the window is repaired by the
sweep, never by a window pass, at the counted read cost. The real SQLite store, a
recording Strava (fakes.FakeStrava)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fakes import FakeStrava, activity_json, sqlite_store
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Account, StravaTokens
from garmin2strava.domain.workouts import normalize_activity
from garmin2strava.services.mirror_backfill import EPOCH
from garmin2strava.services.reconcile import (
    LIST_PAGE,
    ReconcileReport,
    reconcile_all,
    state_key,
)

USER = "u1"
ATHLETE = 42
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DAILY = timedelta(days=1)
WEEKLY = timedelta(days=7)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = sqlite_store(tmp_path / "g2s.sqlite3")
    store.put_account(Account(user_id=USER, strava_athlete_id=ATHLETE))
    # A pass is for accounts with Strava tokens; the fake Strava never reads them.
    store.replace_strava_tokens(USER, StravaTokens("access", "refresh", 0), expected_version=None)
    return store


def _on_strava_and_mirrored(
    store: SqliteStore, strava: FakeStrava, activity_id: int, started: datetime, name: str
) -> None:
    raw = activity_json(activity_id, athlete_id=ATHLETE, name=name, start_date=_iso(started))
    strava.activities[activity_id] = raw
    store.upsert_workout(
        normalize_activity(raw, user_id=USER, updated_at=started + timedelta(hours=1))
    )


def _passes_recorded(store: SqliteStore, *, last_pass: datetime, last_sweep: datetime) -> None:
    """The state a daemon leaves: its daily pass yesterday, its weekly sweep before."""
    store.put_app_state(
        state_key(USER),
        {"startedAt": last_pass.isoformat(), "sweptAt": last_sweep.isoformat()},
    )


def _pass(store: SqliteStore, strava: FakeStrava, now: datetime) -> ReconcileReport:
    (report,) = reconcile_all(store, lambda _: strava, now=now, every=DAILY, sweep_every=WEEKLY)
    assert report.complete
    return report


def test_an_old_dropped_delete_and_rename_are_repaired_by_the_sweep_not_the_window(
    store: SqliteStore,
) -> None:
    """Two activities of 60 days ago: one deleted on Strava, one renamed, both events
    dropped. The daily window pass (last sweep 3 days ago) lists the last 8 days only
    and leaves both stale for its 1 list read; the pass once the sweep is 7 days old
    lists the whole history (1 read), renames for free and checks the unlisted one
    (1 read): deleted."""
    strava = FakeStrava(athlete_id=ATHLETE)
    old = NOW - timedelta(days=60)
    _on_strava_and_mirrored(store, strava, 1007, old, "Early run")
    _on_strava_and_mirrored(store, strava, 1008, old + timedelta(hours=5), "Tempo")
    _on_strava_and_mirrored(store, strava, 2001, NOW - timedelta(days=2), "Recent run")
    _passes_recorded(store, last_pass=NOW - DAILY, last_sweep=NOW - timedelta(days=3))
    del strava.activities[1007]  # deleted on strava.com; the delete event never came
    strava.activities[1008] = strava.activities[1008] | {"name": "Tempo, 8 x 400"}

    window = _pass(store, strava, NOW)

    assert not window.sweep
    assert (window.added, window.deleted, window.changed, window.reads) == ([], [], [], 1)
    assert strava.list_afters == [NOW - DAILY - timedelta(days=7, seconds=1)]
    stale = store.get_workout(USER, 1007)
    assert stale is not None
    assert not stale.is_deleted
    kept_name = store.get_workout(USER, 1008)
    assert kept_name is not None
    assert kept_name.name == "Tempo"

    strava.requests.clear()
    strava.list_afters.clear()
    later = NOW + timedelta(days=4)  # the last sweep is 7 days old now
    sweep = _pass(store, strava, later)

    assert sweep.sweep
    assert sweep.since == EPOCH
    assert strava.list_afters == [EPOCH]  # after=0: Strava's whole history
    assert (sweep.deleted, sweep.changed, sweep.added) == ([1007], [1008], [])
    assert strava.requests == ["list", "fetch"]
    assert strava.fetches == [1007]
    assert sweep.reads == 2
    gone = store.get_workout(USER, 1007)
    assert gone is not None
    assert gone.is_deleted
    renamed = store.get_workout(USER, 1008)
    assert renamed is not None
    assert renamed.name == "Tempo, 8 x 400"
    state = store.get_app_state(state_key(USER))
    assert state is not None
    assert state["sweptAt"] == later.isoformat()

    # The next day's pass is a window pass again, and the sweep's time is kept.
    strava.requests.clear()
    next_day = _pass(store, strava, later + DAILY)
    assert not next_day.sweep
    assert strava.requests == ["list"]
    state = store.get_app_state(state_key(USER))
    assert state is not None
    assert state["sweptAt"] == later.isoformat()


def test_a_state_from_before_sweeps_makes_the_next_pass_a_sweep(store: SqliteStore) -> None:
    """An install upgraded with a stale row (the soak's activity 1007): its stored pass
    has no `sweptAt`, so its next due pass sweeps and repairs it."""
    strava = FakeStrava(athlete_id=ATHLETE)
    _on_strava_and_mirrored(store, strava, 1007, NOW - timedelta(days=60), "Early run")
    del strava.activities[1007]
    store.put_app_state(state_key(USER), {"startedAt": (NOW - DAILY).isoformat()})

    report = _pass(store, strava, NOW)

    assert report.sweep
    assert report.deleted == [1007]


def test_sweep_days_zero_never_sweeps(store: SqliteStore) -> None:
    """G2S_MIRROR_SWEEP_DAYS=0 (sweep_every zero): every pass is a window pass, as
    before sweeps, and the old stale row stays."""
    strava = FakeStrava(athlete_id=ATHLETE)
    _on_strava_and_mirrored(store, strava, 1007, NOW - timedelta(days=60), "Early run")
    del strava.activities[1007]
    store.put_app_state(state_key(USER), {"startedAt": (NOW - DAILY).isoformat()})

    (report,) = reconcile_all(
        store, lambda _: strava, now=NOW, every=DAILY, sweep_every=timedelta(0)
    )

    assert not report.sweep
    assert report.deleted == []
    assert strava.requests == ["list"]


def test_a_sweep_pages_the_history_and_stores_old_missing_activities_from_the_list(
    store: SqliteStore,
) -> None:
    """A history of 2 * LIST_PAGE + 1 activities the mirror never held, all but one
    older than the window: the sweep costs 3 list reads (the adapter reads a page more
    after each full one) and 1 fetch, for the one in the window; the others are stored
    from their list rows, as `mirror backfill` stores them."""
    strava = FakeStrava(athlete_id=ATHLETE)
    first = NOW - timedelta(days=900)
    count = 2 * LIST_PAGE + 1
    for n in range(count - 1):
        started = first + timedelta(days=2 * n)
        strava.activities[5000 + n] = activity_json(
            5000 + n, athlete_id=ATHLETE, start_date=_iso(started)
        )
    recent = 9999
    strava.activities[recent] = activity_json(
        recent, athlete_id=ATHLETE, start_date=_iso(NOW - timedelta(days=1))
    )

    report = _pass(store, strava, NOW)  # no state at all: a new install, the first pass

    assert report.sweep
    assert report.listed == count
    assert strava.requests == ["list", "list", "list", "fetch"]
    assert strava.fetches == [recent]
    assert report.reads == 3 + 1
    assert len(report.added) == count
    assert len(store.list_workouts(USER)) == count
