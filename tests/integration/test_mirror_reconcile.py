"""Reconciliation through the real stravalib against the Strava sandbox, on both
stores (conftest STORE_FACTORIES): what the webhook never said is repaired at the
counted read cost. The sandbox has no webhook subscription here, so every event is
dropped, as Strava may drop one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import build_strava
from garmin2strava.domain.models import Account
from garmin2strava.ports import Store
from garmin2strava.services.reconcile import reconcile_account, reconcile_all, reconcile_due
from garmin2strava.services.strava_access import StravaAccess

pytestmark = pytest.mark.integration

ATHLETE = 601
USER = "u1"


def connected(sandbox: StravaSandbox, store: Store) -> StravaAccess:
    refresh = sandbox.add_athlete(ATHLETE)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
    )
    assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None
    store.put_account(Account(user_id=USER, strava_athlete_id=ATHLETE))
    return build_strava(
        store,
        USER,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        where=sandbox.base_url,
        background=True,
    )


def test_pass_repairs_dropped_create_delete_and_rename_at_the_counted_cost(
    sandbox: StravaSandbox, store: Store
) -> None:
    """After a first pass mirrored three activities, Strava gets a new one, loses one
    and renames (and hides) one, all without an event: the next pass adds, soft-deletes
    and renames them for 1 list read + 1 fetch (the new one) + 1 check (the lost one)."""
    strava = connected(sandbox, store)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [
        sandbox.add_activity(ATHLETE, start_utc=now - timedelta(days=d), elapsed_s=1800)
        for d in (3, 2, 1)
    ]
    first = reconcile_account(store, strava, USER, now=now)
    assert first.complete
    assert sorted(first.added) == sorted(ids)
    assert {w.activity_id for w in store.list_workouts(USER)} == set(ids)
    assert not reconcile_due(store, USER, now=now + timedelta(hours=23), every=timedelta(days=1))

    kept, lost, renamed = ids
    new = sandbox.add_activity(ATHLETE, start_utc=now - timedelta(hours=5), elapsed_s=2400)
    sandbox.delete_activity(lost)
    sandbox.update_activity(renamed, title="Renamed on strava.com", private=True)
    sandbox.requests.clear()

    later = now + timedelta(days=1)
    (report,) = reconcile_all(store, lambda _: strava, now=later, every=timedelta(days=1))
    assert report.complete
    assert (report.added, report.deleted, report.changed) == ([new], [lost], [renamed])
    assert report.reads == 3
    assert dict(sandbox.requests) == {"list": 1, "activity": 2}

    gone = store.get_workout(USER, lost)
    assert gone is not None
    assert gone.is_deleted
    row = store.get_workout(USER, renamed)
    assert row is not None
    assert (row.name, row.is_private) == ("Renamed on strava.com", True)
    assert row.raw is not None
    assert row.raw["visibility"] == "only_me"
    assert store.get_workout(USER, new) is not None
    untouched = store.get_workout(USER, kept)
    assert untouched is not None
    assert not untouched.is_deleted

    # Nothing left to repair: the next pass costs its one list read.
    sandbox.requests.clear()
    (quiet,) = reconcile_all(
        store, lambda _: strava, now=later + timedelta(days=1), every=timedelta(days=1)
    )
    assert (quiet.added, quiet.deleted, quiet.changed, quiet.reads) == ([], [], [], 1)
    assert dict(sandbox.requests) == {"list": 1}


def test_pass_stops_at_the_uploaders_reserve_and_is_done_again(
    sandbox: StravaSandbox, store: Store
) -> None:
    """With 85 of 100 reads spent, a pass sends nothing, records no pass (it stays
    due) and says when the budget reopens."""
    strava = connected(sandbox, store)
    now = datetime.now(UTC)
    sandbox.add_activity(ATHLETE, start_utc=now - timedelta(days=1), elapsed_s=1800)
    sandbox.set_usage(short_all=85, daily_all=85, short_read=85, daily_read=85)
    build_strava(
        store,
        USER,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        where=sandbox.base_url,
    ).get_athlete_id()  # an ordinary read: the budget learns the figures
    sandbox.requests.clear()
    report = reconcile_account(store, strava, USER, now=now)
    assert not report.complete
    assert report.deferred_until is not None
    assert dict(sandbox.requests) == {}
    assert reconcile_due(store, USER, now=now, every=timedelta(days=1))


def test_a_stopped_pass_sends_nothing_and_stays_due(sandbox: StravaSandbox, store: Store) -> None:
    """With the stop event set (a daemon stopping, a Lambda near its timeout), a due
    pass sends no request, records no pass, and the next pass repairs in full."""
    strava = connected(sandbox, store)
    now = datetime.now(UTC).replace(microsecond=0)
    activity = sandbox.add_activity(ATHLETE, start_utc=now - timedelta(days=1), elapsed_s=1800)
    sandbox.requests.clear()
    stop = threading.Event()
    stop.set()

    assert reconcile_all(store, lambda _: strava, now=now, every=timedelta(days=1), stop=stop) == []
    (report,) = reconcile_all(
        store, lambda _: strava, now=now, every=timedelta(days=1), stop=threading.Event()
    )

    assert report.complete
    assert report.added == [activity]
    assert dict(sandbox.requests) == {"list": 1, "activity": 1}


def test_a_pass_stopped_mid_listing_keeps_its_repairs_and_stays_due(
    sandbox: StravaSandbox, store: Store
) -> None:
    """The stop event set while the pass runs (here by the first fetch's answer) ends it
    before its next request: the repair made is kept, no pass is recorded."""
    strava = connected(sandbox, store)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [
        sandbox.add_activity(ATHLETE, start_utc=now - timedelta(days=d), elapsed_s=1800)
        for d in (2, 1)
    ]
    stop = threading.Event()
    fetch = strava.get_activity

    def fetch_then_stop(activity_id: int) -> dict[str, Any]:
        found = fetch(activity_id)
        stop.set()  # what the Lambda's timer does, at a known moment
        return found

    strava.get_activity = fetch_then_stop  # type: ignore[method-assign]  # the stop's moment
    sandbox.requests.clear()

    report = reconcile_account(store, strava, USER, now=now, stop=stop)

    assert (report.stopped, report.complete) == (True, False)
    assert len(report.added) == 1
    assert dict(sandbox.requests) == {"list": 1, "activity": 1}
    assert {w.activity_id for w in store.list_workouts(USER)} == set(report.added)
    assert reconcile_due(store, USER, now=now, every=timedelta(days=1))
    assert set(ids) > set(report.added)


@pytest.mark.parametrize("failure", ["revoked", "outage"])
def test_one_athletes_failure_does_not_keep_the_others_from_their_pass(
    sandbox: StravaSandbox, store: Store, failure: str
) -> None:
    """The first account's pass fails (its token revoked on Strava, or Strava answering
    503 to its listing): the report says so and its pass stays due, and the second
    account's pass still runs and repairs its dropped create."""
    first = connected(sandbox, store)  # USER, athlete ATHLETE
    second_refresh = sandbox.add_athlete(ATHLETE + 1)
    tokens = bootstrap_tokens_from_refresh_token(
        sandbox.client_id, sandbox.client_secret, second_refresh, sandbox.base_url
    )
    assert store.replace_strava_tokens("u2", tokens, expected_version=None) is not None
    store.put_account(Account(user_id="u2", strava_athlete_id=ATHLETE + 1))
    second = build_strava(
        store,
        "u2",
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        where=sandbox.base_url,
        background=True,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    dropped = sandbox.add_activity(ATHLETE + 1, start_utc=now - timedelta(hours=2), elapsed_s=1800)
    if failure == "revoked":
        sandbox.revoke(ATHLETE)
    else:
        sandbox.fail_next("list", 503)  # the first account's listing: Strava is down

    adapters = {USER: first, "u2": second}
    reports = reconcile_all(store, adapters.__getitem__, now=now, every=timedelta(days=1))
    by_user = {r.user_id: r for r in reports}
    assert set(by_user) == {USER, "u2"}
    assert by_user[USER].error is not None
    assert not by_user[USER].complete
    assert reconcile_due(store, USER, now=now, every=timedelta(days=1))
    assert by_user["u2"].complete
    assert by_user["u2"].added == [dropped]
    assert store.get_workout("u2", dropped) is not None


def test_the_sweep_repairs_an_old_dropped_delete_and_rename_the_window_misses(
    sandbox: StravaSandbox, store: Store
) -> None:
    """Two runs of 60 days ago are deleted and renamed on Strava, their events dropped
    (the soak's activity 1007). The daily window pass lists the last 8 days and leaves
    both stale; the weekly sweep lists from after=0 and repairs both for 1 list read
    and 1 check. The first pass of a new install is a sweep too: the old runs are
    stored from the list, the recent one fetched (1 read)."""
    strava = connected(sandbox, store)
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=60)
    lost = sandbox.add_activity(ATHLETE, start_utc=old, elapsed_s=1800)
    renamed = sandbox.add_activity(ATHLETE, start_utc=old + timedelta(hours=5), elapsed_s=1800)
    recent = sandbox.add_activity(ATHLETE, start_utc=now - timedelta(days=1), elapsed_s=1800)
    sandbox.requests.clear()
    daily, weekly = timedelta(days=1), timedelta(days=7)

    def due_pass(when: datetime) -> Any:
        (report,) = reconcile_all(
            store, lambda _: strava, now=when, every=daily, sweep_every=weekly
        )
        assert report.complete
        return report

    first = due_pass(now)
    assert first.sweep
    assert sorted(first.added) == sorted([lost, renamed, recent])
    assert (first.reads, dict(sandbox.requests)) == (2, {"list": 1, "activity": 1})

    sandbox.delete_activity(lost)
    sandbox.update_activity(renamed, title="Renamed weeks later")
    sandbox.requests.clear()

    window = due_pass(now + daily)
    assert not window.sweep
    assert (window.deleted, window.changed, window.reads) == ([], [], 1)
    stale = store.get_workout(USER, lost)
    assert stale is not None
    assert not stale.is_deleted

    sandbox.requests.clear()
    sweep = due_pass(now + weekly)
    assert sweep.sweep
    assert (sweep.deleted, sweep.changed, sweep.added) == ([lost], [renamed], [])
    assert (sweep.reads, dict(sandbox.requests)) == (2, {"list": 1, "activity": 1})
    gone = store.get_workout(USER, lost)
    assert gone is not None
    assert gone.is_deleted
    row = store.get_workout(USER, renamed)
    assert row is not None
    assert row.name == "Renamed weeks later"
    assert {w.activity_id for w in store.list_workouts(USER)} == {renamed, recent}
