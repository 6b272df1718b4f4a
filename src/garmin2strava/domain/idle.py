"""When a cycle may skip the ledger: the idle fast path (issue 20).

An idle cycle reads Garmin's newest activities and finds nothing to do. Proving that
from the ledger costs a read of each listed entry and a query of the unsettled ones,
every minute. Instead the store keeps, per account, a `LedgerMark`: a counter every
ledger write raises first, erasing the idle finding in the same step (so a write, even
one cut short by a crash, is never missed), and the listing that a full check found
idle, until when. The finding is kept only if the counter has not moved since the
check read it (a conditional write). A cycle whose listing is that listing, before
that time, has nothing to do: the ledger has not changed since, and the listing is
the same.

Pure: the store keeps the mark, services/sync.py decides with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from garmin2strava.domain.models import GarminActivity, LedgerEntry, UploadOutcome

__all__ = ["LedgerMark", "idle_until", "listing_key"]


@dataclass(frozen=True, slots=True)
class LedgerMark:
    """`version` counts the account's ledger writes; `idle_key` is the listing a full
    check found idle at this version (each ledger write erases it), valid before
    `idle_until` (None: no limit)."""

    version: int = 0
    idle_key: str | None = None
    idle_until: datetime | None = None

    def is_idle(self, key: str, now: datetime) -> bool:
        if self.idle_key is None or self.idle_key != key:
            return False
        return self.idle_until is None or now < self.idle_until


def listing_key(listed: Sequence[GarminActivity], wants_type: Callable[[str], bool]) -> str:
    """What about a listing decides the cycle: each activity's id and whether its type
    is wanted (a changed G2S_ACTIVITY_TYPES changes the key). A digest, so the mark
    stays small whatever the lookback."""
    # The name too: a Garmin rename of an upload is work (issue 21, the rename carry).
    text = ",".join(
        f"{a.activity_id}:{int(wants_type(a.type_key))}:{a.name}"
        for a in sorted(listed, key=lambda a: a.activity_id)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def idle_until(unsettled: Iterable[LedgerEntry]) -> datetime | None:
    """How long a finding of "nothing to do" holds: until the first failed entry's
    retry is due, or the first retry of a failed PUT on Strava (an upload owing one is
    in the unsettled index; None: nothing waits). Called only when no entry is due now."""
    retries = [
        e.next_retry_at
        for e in unsettled
        if e.outcome is UploadOutcome.FAILED and e.next_retry_at is not None
    ]
    retries += [
        e.finish.retry_at
        for e in unsettled
        if e.finish is not None and e.finish.owed is not None and e.finish.retry_at is not None
    ]
    return min(retries, default=None)
