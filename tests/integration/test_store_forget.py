"""What every ports.Store does for the operator's console: audit read back by time
range, and deleting an account (see conftest STORE_FACTORIES: SQLite and DynamoDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
    Workout,
)
from garmin2strava.ports import Store

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)


def _workout(activity_id: int, user_id: str = "u1", *, deleted: bool = False) -> Workout:
    return Workout(
        user_id=user_id,
        activity_id=activity_id,
        athlete_id=42 if user_id == "u1" else 43,
        name="Run",
        sport_type="Run",
        start_date=T0 + timedelta(hours=activity_id),
        elapsed_time=1800,
        moving_time=None,
        distance=5000.0,
        total_elevation_gain=None,
        external_id=None,
        upload_id=None,
        is_private=False,
        is_deleted=deleted,
        updated_at=T0,
    )


def _seed(store: Store, user_id: str, athlete_id: int) -> None:
    store.put_account(Account(user_id=user_id, strava_athlete_id=athlete_id, created_at=T0))
    store.link_athlete(athlete_id, user_id)
    store.replace_strava_tokens(
        user_id, StravaTokens("a", "r", 1_700_000_000), expected_version=None
    )
    store.replace_garmin_tokens(user_id, '{"di_token": "x"}', expected_version=None)
    store.put_upload(
        LedgerEntry(
            user_id=user_id,
            garmin_activity_id=7,
            external_id="garmin2strava-7",
            outcome=UploadOutcome.UPLOADED,
            updated_at=T0,
            start_utc=T0,
            strava_activity_id=900,
        )
    )
    for activity_id in (1, 2, 3):
        store.upsert_workout(_workout(activity_id, user_id, deleted=activity_id == 3))
    store.add_audit(AuditEvent(user_id, datetime.now(UTC), "sync.cycle", f"{user_id}-e"))


def test_list_audit_since_reads_only_the_range(store: Store) -> None:
    """`since` bounds the key range: events before it are not returned, at it they are."""
    now = datetime.now(UTC).replace(microsecond=0)
    for hours in (1, 2, 3, 4):
        store.add_audit(AuditEvent("u1", now - timedelta(hours=hours), "sync.cycle", f"h{hours}"))
    store.add_audit(AuditEvent("u2", now, "sync.cycle", "other"))
    since = now - timedelta(hours=2)
    assert [e.event_id for e in store.list_audit("u1", since=since)] == ["h1", "h2"]
    assert [e.event_id for e in store.list_audit("u1", since=since, limit=1)] == ["h1"]
    assert [e.event_id for e in store.list_audit("u1")] == ["h1", "h2", "h3", "h4"]
    assert store.list_audit("u1", since=now + timedelta(seconds=1)) == []


def test_delete_account_keeps_only_ledger_and_audit(store: Store) -> None:
    """After delete_account (and the Strava tokens' delete) the account is gone from the
    registry, its athlete link and tokens are gone; the ledger and audit stay; another
    account is untouched."""
    _seed(store, "u1", 42)
    _seed(store, "u2", 43)
    assert store.acquire_lease("u1", "op", now=datetime.now(UTC), ttl_seconds=60)
    store.delete_strava_tokens("u1")
    store.delete_account("u1")
    assert store.get_account("u1") is None
    assert [a.user_id for a in store.list_accounts()] == ["u2"]
    assert store.user_for_athlete(42) is None
    assert store.get_strava_tokens("u1") is None
    assert store.get_garmin_tokens("u1") is None
    # The lease went with the account: anyone may take it now.
    assert store.acquire_lease("u1", "someone", now=datetime.now(UTC), ttl_seconds=60)
    assert list(store.get_uploads("u1", [7])) == [7]
    assert [e.event_id for e in store.list_audit("u1")] == ["u1-e"]
    assert store.get_account("u2") is not None
    assert store.user_for_athlete(43) == "u2"
    assert store.get_garmin_tokens("u2") is not None


def test_a_removed_account_can_be_added_again(store: Store) -> None:
    """Token versions survive the delete (tombstones), so new tokens are written over
    nothing and a writer holding a version from before never wins."""
    _seed(store, "u1", 42)
    before = store.get_garmin_tokens("u1")
    assert before is not None
    store.delete_account("u1")
    assert store.replace_garmin_tokens("u1", "{}", expected_version=before.version) is None
    assert store.replace_garmin_tokens("u1", "{}", expected_version=None) is not None
    store.put_account(Account(user_id="u1"))
    assert [a.user_id for a in store.list_accounts()] == ["u1"]
