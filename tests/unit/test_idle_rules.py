"""The idle fast path's rules (domain/idle.py) and `history`'s "idle since"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from garmin2strava.domain.idle import LedgerMark, idle_until, listing_key
from garmin2strava.domain.models import GarminActivity, LedgerEntry, UploadOutcome
from garmin2strava.entrypoints.aws_lambda.sync_handler import changed_nothing
from garmin2strava.services.history import HistoryEntry, idle_since
from garmin2strava.services.sync import LEASE_HELD, LEASE_LOST, CycleReport

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _run(garmin_id: int, type_key: str = "running") -> GarminActivity:
    return GarminActivity(
        activity_id=garmin_id,
        name="Run",
        type_key=type_key,
        start_utc=NOW - timedelta(hours=garmin_id),
        elapsed_seconds=1800.0,
        distance_m=5000.0,
        manual=False,
        family="run",
        indoor=False,
    )


def _runs_only(type_key: str) -> bool:
    return type_key == "running"


def test_the_listing_key_follows_ids_and_wanted_types_not_order() -> None:
    listed = [_run(1), _run(2, "cycling")]
    key = listing_key(listed, _runs_only)
    assert key == listing_key(list(reversed(listed)), _runs_only)
    assert key != listing_key([_run(1), _run(3, "cycling")], _runs_only)  # a new activity
    assert key != listing_key(listed, lambda _: True)  # G2S_ACTIVITY_TYPES changed


def test_a_mark_holds_for_its_listing_until_its_time_only() -> None:
    key = listing_key([_run(1)], _runs_only)
    mark = LedgerMark(version=3, idle_key=key, idle_until=NOW + timedelta(minutes=4))
    assert mark.is_idle(key, NOW)
    assert not mark.is_idle(key, NOW + timedelta(minutes=4))  # a retry is due
    assert not mark.is_idle(listing_key([_run(2)], _runs_only), NOW)
    assert not LedgerMark(version=3).is_idle(key, NOW)  # never found idle
    assert LedgerMark(version=3, idle_key=key).is_idle(key, NOW + timedelta(days=300))


def _entry(garmin_id: int, outcome: UploadOutcome, retry_at: datetime | None) -> LedgerEntry:
    return LedgerEntry(
        user_id="u",
        garmin_activity_id=garmin_id,
        external_id=f"g2s-{garmin_id}",
        outcome=outcome,
        next_retry_at=retry_at,
        updated_at=NOW,
    )


def test_idle_holds_until_the_first_failed_retry() -> None:
    later, sooner = NOW + timedelta(hours=2), NOW + timedelta(minutes=8)
    entries = [_entry(1, UploadOutcome.FAILED, later), _entry(2, UploadOutcome.FAILED, sooner)]
    assert idle_until(entries) == sooner
    assert idle_until([]) is None


def test_history_says_idle_since_the_newest_event_unless_a_failure() -> None:
    ok = HistoryEntry("u", NOW, "sync.cycle", {"ok": True, "durationMs": 10})
    failed = HistoryEntry("u", NOW, "sync.cycle", {"ok": False, "durationMs": 10})
    older = HistoryEntry("u", NOW - timedelta(days=1), "sync.cycle", {"ok": True})
    assert idle_since([ok, older]) == NOW
    assert idle_since([failed, older]) is None
    assert idle_since([]) is None


def test_telling_reuses_the_invocations_view_only_after_cycles_that_changed_nothing() -> None:
    """Idle, paused or backing off: the view read at the start still holds. Anything
    done, failed or deferred, or a lease held or lost (another runner at work): no."""
    idle = CycleReport("a")
    paused = CycleReport("b", skipped_reason="paused by the operator since 2026-06-01")
    assert changed_nothing([idle, paused])
    assert changed_nothing([])
    did = CycleReport("a")
    did.note("uploaded", 1)
    deferred = CycleReport("a", deferred_until=NOW)
    for other in (
        did,
        CycleReport("a", ok=False, error="Garmin answered 401"),
        deferred,
        CycleReport("a", skipped_reason=LEASE_HELD),
        CycleReport("a", skipped_reason=LEASE_LOST),
    ):
        assert not changed_nothing([idle, other])
