"""Which Garmin activities a sync cycle works on (DESIGN.md "Uploader", steps 2-3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from garmin2strava.domain.activities import (
    is_indoor,
    is_plausible_start,
    oldest_first,
    parse_activity,
    sport_family,
)
from garmin2strava.domain.models import GarminActivity, LedgerEntry, UploadOutcome
from garmin2strava.errors import InvalidActivity
from garmin2strava.ports import GarminPort, Store

__all__ = ["choose_candidates", "is_settled", "list_garmin"]


def list_garmin(
    garmin: GarminPort, *, limit: int, reject: Callable[[object, str], None]
) -> list[GarminActivity]:
    """The newest `limit` Garmin activities; each record that is none goes to `reject`
    with the reason."""
    records = garmin.list_activities(start=0, limit=limit)
    parsed: list[GarminActivity] = []
    for record in records:
        try:
            parsed.append(parse_activity(record))
        except InvalidActivity as exc:
            reject(record, str(exc))
    return parsed


def choose_candidates(
    listed: Sequence[GarminActivity],
    ledger: dict[int, LedgerEntry],
    *,
    store: Store,
    user_id: str,
    wants_type: Callable[[str], bool],
    now: datetime,
) -> list[GarminActivity]:
    """Unsettled and due activities of the wanted types, plus unsettled ledger
    entries that have scrolled out of the listing (added to `ledger`). Oldest first."""
    chosen: dict[int, GarminActivity] = {}
    for activity in listed:
        entry = ledger.get(activity.activity_id)
        if is_settled(entry) or not wants_type(activity.type_key):
            continue
        if entry is None or _is_due(entry, now):
            chosen[activity.activity_id] = activity
    for entry in store.list_unsettled_uploads(user_id):
        if entry.garmin_activity_id in chosen or not _is_due(entry, now):
            continue
        if entry.start_utc is None or entry.garmin_activity_id in {a.activity_id for a in listed}:
            continue
        if not is_plausible_start(entry.start_utc):
            continue  # an entry from before starts were checked; never a real run
        ledger[entry.garmin_activity_id] = entry
        chosen[entry.garmin_activity_id] = _activity_from_entry(entry)
    return oldest_first(chosen.values())


def is_settled(entry: LedgerEntry | None) -> bool:
    return entry is not None and entry.outcome.settled


def _is_due(entry: LedgerEntry, now: datetime) -> bool:
    if entry.outcome is UploadOutcome.FAILED and entry.next_retry_at:
        return entry.next_retry_at <= now
    return True


def _activity_from_entry(entry: LedgerEntry) -> GarminActivity:
    assert entry.start_utc is not None
    return GarminActivity(
        activity_id=entry.garmin_activity_id,
        name=entry.activity_name,
        type_key=entry.type_key,
        start_utc=entry.start_utc,
        elapsed_seconds=0.0,
        distance_m=None,
        manual=False,
        family=sport_family(entry.type_key),
        indoor=is_indoor(entry.type_key),
    )
