"""The behaviour every ports.Store implementation must have (see conftest STORE_FACTORIES)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from garmin2strava.domain.idle import LedgerMark
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    AuditEvent,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
    Workout,
)
from garmin2strava.errors import StoreConflict
from garmin2strava.ports import Store

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)


def _tokens(access: str, refresh: str = "r-1", expires_at: int = 1_700_000_000) -> StravaTokens:
    return StravaTokens(
        access_token=access,
        refresh_token=refresh,
        expires_at=expires_at,
        scope="activity:write,activity:read_all",
        athlete_id=42,
    )


def _entry(
    garmin_id: int,
    outcome: UploadOutcome = UploadOutcome.UPLOADED,
    *,
    start: datetime | None = T0,
    user_id: str = "u1",
) -> LedgerEntry:
    return LedgerEntry(
        user_id=user_id,
        garmin_activity_id=garmin_id,
        external_id=f"garmin2strava-{garmin_id}",
        outcome=outcome,
        updated_at=T0 + timedelta(hours=1),
        activity_name="Morning Run",
        type_key="running",
        start_utc=start,
        attempts=1,
        strava_activity_id=9000 + garmin_id if outcome.settled else None,
        upload_id=None,
        detail="",
        next_retry_at=None,
    )


def _workout(
    activity_id: int,
    *,
    updated_at: datetime = T0,
    start: datetime = T0,
    name: str = "Morning Run",
    deleted: bool = False,
    user_id: str = "u1",
) -> Workout:
    return Workout(
        user_id=user_id,
        activity_id=activity_id,
        athlete_id=42,
        name=name,
        sport_type="Run",
        start_utc=start,
        elapsed_time=1800,
        moving_time=1750,
        distance=5012.5,
        total_elevation_gain=12.0,
        external_id=f"garmin2strava-{activity_id}",
        upload_id=77,
        is_private=False,
        is_deleted=deleted,
        updated_at=updated_at,
        raw={"id": activity_id, "name": name},
    )


# -- accounts ---------------------------------------------------------------------------
def test_account_round_trips_every_field(store: Store) -> None:
    """An account comes back exactly as written, datetimes aware and in UTC."""
    plus2 = timezone(timedelta(hours=2))
    account = Account(
        user_id="u1",
        status=AccountStatus.NEEDS_GARMIN_LOGIN,
        status_detail="Garmin refused the tokens",
        strava_athlete_id=42,
        enabled=False,
        paused_at=T0 - timedelta(hours=1),
        garmin_backoff_until=datetime(2025, 5, 1, 12, 0, tzinfo=plus2),
        mirror_covers_since=T0,
        created_at=T0 - timedelta(days=3),
        last_cycle_at=T0 + timedelta(microseconds=123456),
        last_cycle_ok=False,
        last_cycle_summary={"uploaded": 2, "failed": 1},
    )
    assert store.get_account("u1") is None
    store.put_account(account)
    got = store.get_account("u1")
    assert got == account
    assert got is not None
    assert got.garmin_backoff_until is not None
    assert got.garmin_backoff_until.utcoffset() == timedelta(0)


def test_list_accounts_returns_each_account_once_with_latest_state(store: Store) -> None:
    """list_accounts sees every account, once, in its last written state."""
    store.put_account(Account(user_id="b"))
    store.put_account(Account(user_id="a"))
    store.put_account(Account(user_id="b", status=AccountStatus.DISCONNECTED))
    accounts = {a.user_id: a for a in store.list_accounts()}
    assert sorted(accounts) == ["a", "b"]
    assert len(store.list_accounts()) == 2
    assert accounts["b"].status is AccountStatus.DISCONNECTED


def test_athlete_link_resolves_to_the_last_linked_user(store: Store) -> None:
    """user_for_athlete answers the linked user, None for unknown athletes."""
    assert store.user_for_athlete(42) is None
    store.link_athlete(42, "u1")
    store.link_athlete(43, "u2")
    assert store.user_for_athlete(42) == "u1"
    store.link_athlete(42, "u3")
    assert store.user_for_athlete(42) == "u3"
    assert store.user_for_athlete(43) == "u2"


# -- tokens -------------------------------------------------------------------------------
def test_strava_tokens_versioned_writes(store: Store) -> None:
    """Each successful write bumps the version; a stale expected version loses."""
    assert store.get_strava_tokens("u1") is None
    first = store.replace_strava_tokens("u1", _tokens("a-1"), expected_version=None)
    assert first is not None
    assert first.version == 1
    assert store.get_strava_tokens("u1") == first
    assert store.replace_strava_tokens("u1", _tokens("a-x"), expected_version=None) is None

    second = store.replace_strava_tokens("u1", _tokens("a-2", "r-2"), expected_version=1)
    assert second is not None
    assert second.version == 2
    assert second.access_token == "a-2"
    assert store.replace_strava_tokens("u1", _tokens("stale"), expected_version=1) is None
    stored = store.get_strava_tokens("u1")
    assert stored == second
    assert stored is not None
    assert (stored.refresh_token, stored.scope, stored.athlete_id) == (
        "r-2",
        "activity:write,activity:read_all",
        42,
    )


def test_concurrent_token_refresh_has_exactly_one_winner(store: Store) -> None:
    """Threads racing from the same version: one wins, the rest get None, winner is stored."""
    store.replace_strava_tokens("u1", _tokens("a-0"), expected_version=None)
    racers = 8
    barrier = threading.Barrier(racers)
    results: dict[int, StravaTokens | None] = {}

    def refresh(n: int) -> None:
        barrier.wait()
        results[n] = store.replace_strava_tokens("u1", _tokens(f"a-{n}"), expected_version=1)

    threads = [threading.Thread(target=refresh, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [(n, won) for n, won in results.items() if won is not None]
    assert len(results) == racers
    assert len(winners) == 1
    n, won = winners[0]
    assert won.version == 2
    stored = store.get_strava_tokens("u1")
    assert stored is not None
    assert stored.access_token == f"a-{n}"
    assert stored.version == 2


def test_deleted_strava_tokens_are_gone_and_can_be_written_again(store: Store) -> None:
    """After delete_strava_tokens the user has no tokens; a fresh write starts over."""
    store.replace_strava_tokens("u1", _tokens("a-1"), expected_version=None)
    store.delete_strava_tokens("u1")
    assert store.get_strava_tokens("u1") is None
    again = store.replace_strava_tokens("u1", _tokens("a-new"), expected_version=None)
    assert again is not None
    assert again.access_token == "a-new"


def test_token_version_from_before_a_delete_never_wins(store: Store) -> None:
    """A refresher holding a pre-delete version loses against tokens written after it."""
    store.replace_strava_tokens("u1", _tokens("a-1"), expected_version=None)
    store.delete_strava_tokens("u1")
    fresh = store.replace_strava_tokens("u1", _tokens("a-reauth"), expected_version=None)
    assert fresh is not None
    assert fresh.version != 1
    assert store.replace_strava_tokens("u1", _tokens("a-stale"), expected_version=1) is None
    assert store.get_strava_tokens("u1") == fresh


def test_garmin_tokens_versioned_writes(store: Store) -> None:
    """Garmin token blobs round-trip and follow the same compare-and-set rule."""
    blob = '{"di_token": "x", "di_refresh_token": "y"}'
    assert store.get_garmin_tokens("u1") is None
    first = store.replace_garmin_tokens("u1", blob, expected_version=None)
    assert first is not None
    assert first.version == 1
    assert store.replace_garmin_tokens("u1", "other", expected_version=None) is None
    second = store.replace_garmin_tokens("u1", blob + " ", expected_version=1)
    assert second is not None
    assert second.version == 2
    assert store.replace_garmin_tokens("u1", "stale", expected_version=1) is None
    assert store.get_garmin_tokens("u1") == second
    assert store.get_strava_tokens("u1") is None


# -- lease --------------------------------------------------------------------------------
def test_lease_is_exclusive_until_it_expires(store: Store) -> None:
    """A held lease refuses others; after its ttl anyone may take it."""
    assert store.acquire_lease("u1", "runner-a", now=T0, ttl_seconds=60)
    assert not store.acquire_lease("u1", "runner-b", now=T0 + timedelta(seconds=59), ttl_seconds=60)
    assert store.acquire_lease("u2", "runner-b", now=T0, ttl_seconds=60)  # other account
    assert store.acquire_lease("u1", "runner-b", now=T0 + timedelta(seconds=60), ttl_seconds=60)
    assert not store.acquire_lease("u1", "runner-a", now=T0 + timedelta(seconds=61), ttl_seconds=60)


def test_same_owner_renews_and_extends_the_lease(store: Store) -> None:
    """The holder may re-acquire; the renewal pushes the expiry forward."""
    assert store.acquire_lease("u1", "runner-a", now=T0, ttl_seconds=60)
    assert store.acquire_lease("u1", "runner-a", now=T0 + timedelta(seconds=50), ttl_seconds=60)
    assert not store.acquire_lease(
        "u1", "runner-b", now=T0 + timedelta(seconds=100), ttl_seconds=60
    )


def test_only_the_owner_releases_the_lease(store: Store) -> None:
    """release_lease by someone else is a no-op; by the owner it frees the lease."""
    assert store.acquire_lease("u1", "runner-a", now=T0, ttl_seconds=600)
    store.release_lease("u1", "runner-b")
    assert not store.acquire_lease("u1", "runner-b", now=T0, ttl_seconds=600)
    store.release_lease("u1", "runner-a")
    assert store.acquire_lease("u1", "runner-b", now=T0, ttl_seconds=600)


# -- ledger -------------------------------------------------------------------------------
def test_ledger_batch_get_returns_only_known_ids(store: Store) -> None:
    """get_uploads maps known Garmin ids to their entries and leaves unknown ones out."""
    first, second = _entry(1), _entry(2, UploadOutcome.FAILED)
    store.put_upload(first)
    store.put_upload(second)
    store.put_upload(_entry(1, user_id="someone-else"))
    assert store.get_uploads("u1", [1, 2, 3, 1]) == {1: first, 2: second}
    assert store.get_uploads("u1", []) == {}


def test_ledger_batch_get_handles_many_ids(store: Store) -> None:
    """A batch larger than any backend's per-request limit still answers completely."""
    for garmin_id in range(0, 1200, 3):
        store.put_upload(_entry(garmin_id))
    found = store.get_uploads("u1", list(range(1200)))
    assert sorted(found) == list(range(0, 1200, 3))


def test_put_upload_overwrites_the_entry(store: Store) -> None:
    """A later put for the same Garmin id replaces the earlier one."""
    store.put_upload(_entry(1, UploadOutcome.PENDING))
    done = _entry(1, UploadOutcome.UPLOADED)
    store.put_upload(done)
    assert store.get_uploads("u1", [1]) == {1: done}
    assert len(store.list_uploads("u1")) == 1


def test_upload_intent_never_replaces_a_settled_entry(store: Store) -> None:
    """A pending intent over any settled entry raises StoreConflict and changes nothing."""
    settled = [outcome for outcome in UploadOutcome if outcome.settled]
    for garmin_id, outcome in enumerate(settled):
        done = _entry(garmin_id, outcome)
        store.put_upload(done)
        intent = replace(_entry(garmin_id, UploadOutcome.PENDING), detail="upload requested")
        with pytest.raises(StoreConflict):
            store.put_upload(intent)
        assert store.get_uploads("u1", [garmin_id]) == {garmin_id: done}
    assert {e.outcome for e in store.list_uploads("u1")} == set(settled)
    assert store.list_unsettled_uploads("u1") == []


def test_upload_intent_is_written_over_nothing_or_an_unsettled_entry(store: Store) -> None:
    """A pending intent is recorded for a new id and over pending, processing or failed."""
    fresh = _entry(1, UploadOutcome.PENDING)
    store.put_upload(fresh)
    assert store.get_uploads("u1", [1]) == {1: fresh}
    unsettled = [UploadOutcome.PENDING, UploadOutcome.PROCESSING, UploadOutcome.FAILED]
    for garmin_id, outcome in enumerate(unsettled, start=10):
        store.put_upload(_entry(garmin_id, outcome))
        intent = replace(
            _entry(garmin_id, UploadOutcome.PENDING), attempts=2, detail="upload requested"
        )
        store.put_upload(intent)
        assert store.get_uploads("u1", [garmin_id]) == {garmin_id: intent}
    listed = {e.garmin_activity_id: e.outcome for e in store.list_unsettled_uploads("u1")}
    assert listed == dict.fromkeys([1, 10, 11, 12], UploadOutcome.PENDING)


def test_settled_entry_is_reopened_by_a_failed_write(store: Store) -> None:
    """Only intents are refused: a failed entry (the retry command) replaces a dead one."""
    store.put_upload(_entry(1, UploadOutcome.DEAD))
    retry = _entry(1, UploadOutcome.FAILED)
    store.put_upload(retry)
    assert store.get_uploads("u1", [1]) == {1: retry}
    assert [e.garmin_activity_id for e in store.list_unsettled_uploads("u1")] == [1]


def test_list_uploads_newest_start_first_then_id(store: Store) -> None:
    """list_uploads orders by Garmin start time, then id, newest first, honouring limit."""
    store.put_upload(_entry(5, start=T0))
    store.put_upload(_entry(3, start=T0 + timedelta(days=1)))
    store.put_upload(_entry(4, start=T0))
    store.put_upload(_entry(100, start=T0 - timedelta(days=1)))
    assert [e.garmin_activity_id for e in store.list_uploads("u1")] == [3, 5, 4, 100]
    assert [e.garmin_activity_id for e in store.list_uploads("u1", limit=2)] == [3, 5]
    assert store.list_uploads("nobody") == []


def test_list_unsettled_uploads_tracks_outcome_changes(store: Store) -> None:
    """Pending, processing and failed entries are listed until they settle."""
    for garmin_id, outcome in enumerate(UploadOutcome):
        store.put_upload(_entry(garmin_id, outcome, start=T0 + timedelta(minutes=garmin_id)))
    unsettled = {e.garmin_activity_id: e.outcome for e in store.list_unsettled_uploads("u1")}
    assert set(unsettled.values()) == {
        UploadOutcome.PENDING,
        UploadOutcome.PROCESSING,
        UploadOutcome.FAILED,
    }
    pending_id = next(k for k, v in unsettled.items() if v is UploadOutcome.PENDING)
    store.put_upload(_entry(pending_id, UploadOutcome.UPLOADED))
    after = {e.garmin_activity_id for e in store.list_unsettled_uploads("u1")}
    assert after == set(unsettled) - {pending_id}
    assert store.list_unsettled_uploads("someone-else") == []


# -- audit --------------------------------------------------------------------------------
def test_every_ledger_write_raises_the_mark_and_ends_an_idle_finding(store: Store) -> None:
    """The idle fast path's mark (domain/idle.py): each ledger write raises its version,
    a refused intent included; an idle finding is kept only at the version it was read
    at, and survives the account's removal with the ledger."""
    fresh = store.ledger_mark("u1")
    assert fresh == LedgerMark()
    assert store.mark_idle("u1", LedgerMark(0, "listing-a", None))
    store.put_upload(_entry(1))
    mark = store.ledger_mark("u1")
    assert mark is not None
    assert (mark.version, mark.idle_key) == (1, None)
    with pytest.raises(StoreConflict):
        store.put_upload(_entry(1, UploadOutcome.PENDING))
    assert not store.mark_idle("u1", LedgerMark(1, "listing-b", T0))  # stale: version 2 now
    assert store.mark_idle("u1", LedgerMark(2, "listing-b", T0))
    assert store.ledger_mark("u1") == LedgerMark(2, "listing-b", T0)
    store.put_account(Account(user_id="u1"))
    store.delete_account("u1")
    assert store.ledger_mark("u1") == LedgerMark(2, "listing-b", T0)


def test_read_view_has_the_accounts_and_the_app_state_asked_for(store: Store) -> None:
    store.put_account(Account(user_id="u2"))
    store.put_account(Account(user_id="u1"))
    store.put_app_state("budget", {"used": 3})
    view = store.read_view(["budget", "never_written"])
    assert [a.user_id for a in view.accounts] == ["u1", "u2"]
    assert view.app_state == {"budget": {"used": 3}, "never_written": None}
    store.delete_account("u2")
    assert [a.user_id for a in store.read_view([]).accounts] == ["u1"]


def test_audit_newest_first_with_limit(store: Store) -> None:
    """list_audit returns the user's events newest first, with their detail."""
    now = datetime.now(UTC)
    for minutes in (3, 1, 2):
        store.add_audit(
            AuditEvent(
                user_id="u1",
                at=now - timedelta(minutes=minutes),
                kind="sync.cycle",
                event_id=f"e{minutes}",
                detail={"uploaded": minutes, "note": "ok"},
            )
        )
    events = store.list_audit("u1")
    assert [e.event_id for e in events] == ["e1", "e2", "e3"]
    assert events[0].detail == {"uploaded": 1, "note": "ok"}
    assert [e.event_id for e in store.list_audit("u1", limit=1)] == ["e1"]
    assert store.list_audit("u2") == []


def test_audit_events_past_retention_are_not_returned(store: Store) -> None:
    """An event older than its retention period is gone; one within it is kept."""
    now = datetime.now(UTC)
    old = now - timedelta(days=8)
    store.add_audit(AuditEvent("u1", old, "sync.cycle", "expired"), retention_days=7)
    store.add_audit(AuditEvent("u1", old, "sync.cycle", "kept"), retention_days=30)
    store.add_audit(AuditEvent("u1", now, "sync.cycle", "fresh"), retention_days=7)
    assert [e.event_id for e in store.list_audit("u1")] == ["fresh", "kept"]


# -- mirror -------------------------------------------------------------------------------
def test_workout_round_trips(store: Store) -> None:
    """A mirrored workout comes back exactly as written, raw JSON included."""
    workout = _workout(1)
    assert store.get_workout("u1", 1) is None
    assert store.upsert_workout(workout)
    assert store.get_workout("u1", 1) == workout
    assert store.get_workout("u2", 1) is None


def test_older_workout_write_never_overwrites_newer(store: Store) -> None:
    """Out-of-order writes: older updated_at loses, newer or equal wins."""
    assert store.upsert_workout(_workout(1, updated_at=T0 + timedelta(minutes=5), name="new"))
    assert not store.upsert_workout(_workout(1, updated_at=T0, name="old"))
    got = store.get_workout("u1", 1)
    assert got is not None
    assert got.name == "new"
    assert store.upsert_workout(_workout(1, updated_at=T0 + timedelta(minutes=5), name="same"))
    assert store.upsert_workout(_workout(1, updated_at=T0 + timedelta(minutes=6), name="newer"))
    got = store.get_workout("u1", 1)
    assert got is not None
    assert got.name == "newer"


def test_soft_delete_is_kept_against_older_updates(store: Store) -> None:
    """A soft-deleted row stays, flagged, and an older update does not revive it."""
    store.upsert_workout(_workout(1, updated_at=T0))
    assert store.upsert_workout(_workout(1, updated_at=T0 + timedelta(minutes=2), deleted=True))
    assert not store.upsert_workout(_workout(1, updated_at=T0 + timedelta(minutes=1)))
    got = store.get_workout("u1", 1)
    assert got is not None
    assert got.is_deleted


def test_list_workouts_hides_deleted_unless_asked(store: Store) -> None:
    """list_workouts is newest start first, skips deleted rows by default, honours limit."""
    store.upsert_workout(_workout(1, start=T0))
    store.upsert_workout(_workout(2, start=T0 + timedelta(days=1), deleted=True))
    store.upsert_workout(_workout(3, start=T0 + timedelta(days=2)))
    store.upsert_workout(_workout(4, start=T0, user_id="u2"))
    assert [w.activity_id for w in store.list_workouts("u1")] == [3, 1]
    assert [w.activity_id for w in store.list_workouts("u1", include_deleted=True)] == [3, 2, 1]
    assert [w.activity_id for w in store.list_workouts("u1", limit=1)] == [3]


def test_workouts_starting_between_is_inclusive_and_per_user(store: Store) -> None:
    """Only the user's live workouts with start in [start, end] are returned, oldest first."""
    store.upsert_workout(_workout(1, start=T0 - timedelta(seconds=1)))
    store.upsert_workout(_workout(2, start=T0))
    store.upsert_workout(_workout(3, start=T0 + timedelta(seconds=90)))
    store.upsert_workout(_workout(4, start=T0 + timedelta(seconds=120)))
    store.upsert_workout(_workout(5, start=T0 + timedelta(seconds=121)))
    store.upsert_workout(_workout(6, start=T0 + timedelta(seconds=60), deleted=True))
    store.upsert_workout(_workout(7, start=T0 + timedelta(seconds=60), user_id="u2"))
    found = store.workouts_starting_between("u1", T0, T0 + timedelta(seconds=120))
    assert [w.activity_id for w in found] == [2, 3, 4]
    plus2 = timezone(timedelta(hours=2))
    local = store.workouts_starting_between(
        "u1", T0.astimezone(plus2), T0.astimezone(plus2) + timedelta(seconds=100)
    )
    assert [w.activity_id for w in local] == [2, 3]


# -- application state --------------------------------------------------------------------
def test_app_state_round_trips_and_overwrites(store: Store) -> None:
    """App state keys hold nested JSON values; the last write wins."""
    assert store.get_app_state("strava.budget") is None
    store.put_app_state("strava.budget", {"used": {"15m": 3}, "windows": [1, 2]})
    store.put_app_state("backfill.u1", {"cursor": "2025-05-01"})
    assert store.get_app_state("strava.budget") == {"used": {"15m": 3}, "windows": [1, 2]}
    store.put_app_state("strava.budget", {"used": {}})
    assert store.get_app_state("strava.budget") == {"used": {}}
    assert store.get_app_state("backfill.u1") == {"cursor": "2025-05-01"}


# -- deauthorization ----------------------------------------------------------------------
def test_forget_strava_data_deletes_workouts_and_audit_of_one_user_only(store: Store) -> None:
    """forget_strava_data deletes the user's workouts (60, past a batch of 25) and audit
    events; the ledger, tokens, account and the other user's items stay."""
    now = datetime.now(UTC)
    for user in ("u1", "u2"):
        store.put_account(Account(user_id=user, strava_athlete_id=42))
        store.put_upload(_entry(1, user_id=user))
        store.replace_strava_tokens(user, _tokens(f"a-{user}"), expected_version=None)
        for activity_id in range(1, 61):
            store.upsert_workout(_workout(activity_id, user_id=user))
        store.add_audit(AuditEvent(user, now, "sync.cycle", f"e-{user}", {}))
    deleted = store.forget_strava_data("u1")
    assert deleted == 61
    assert store.list_workouts("u1", include_deleted=True) == []
    assert store.get_workout("u1", 1) is None
    assert store.list_audit("u1") == []
    assert [e.garmin_activity_id for e in store.list_uploads("u1")] == [1]
    assert store.get_strava_tokens("u1") is not None
    assert store.get_account("u1") is not None
    assert len(store.list_workouts("u2", include_deleted=True)) == 60
    assert len(store.list_audit("u2")) == 1
    assert store.forget_strava_data("u1") == 0


def test_known_athletes_are_the_linked_accounts_athletes(store: Store) -> None:
    """known_athletes lists, in one read, the athletes of accounts linked as `get-token`
    links them; a deleted account's athlete leaves the set, other items never enter it."""
    assert store.known_athletes() == frozenset()
    for user_id, athlete_id in (("u1", 42), ("u2", 9_000_000_001)):
        store.put_account(Account(user_id=user_id, strava_athlete_id=athlete_id))
        store.link_athlete(athlete_id, user_id)
    store.put_account(Account(user_id="u3"))  # no Strava athlete yet
    store.put_app_state("athletes", {"athleteId": 7})
    assert store.known_athletes() == frozenset({42, 9_000_000_001})
    store.delete_account("u1")
    assert store.known_athletes() == frozenset({9_000_000_001})
