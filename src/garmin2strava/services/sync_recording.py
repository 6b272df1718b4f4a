"""What one sync cycle writes down: ledger entries (settled, failed, dead, skipped
records), audit events and the notes of its report."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from garmin2strava.domain.activities import external_id_for
from garmin2strava.domain.models import AuditEvent, GarminActivity, LedgerEntry, UploadOutcome
from garmin2strava.domain.uploads import next_retry_at
from garmin2strava.ports import Store

__all__ = ["MAX_CYCLE_ITEMS", "CycleRecorder"]

# What one `sync.cycle` audit event lists at most (a DynamoDB item stays far below its
# 400 KB); a backfill cycle beyond this counts the rest in `itemsOmitted`.
MAX_CYCLE_ITEMS = 100


class _Report(Protocol):
    """The part of a cycle's report that its audit event keeps."""

    ok: bool
    skipped_reason: str
    error: str
    deferred_until: datetime | None

    @property
    def outcomes(self) -> Mapping[str, int]: ...


# The uploader's events keep the logger name they have always had, whichever of the
# sync modules writes them ("logger" in the JSON log lines).
log = logging.getLogger("garmin2strava.services.sync")


@dataclass(slots=True, kw_only=True)
class CycleRecorder:
    """Writes one account's ledger entries and audit events, and notes each outcome
    (`note`: the cycle report's). A dry run notes outcomes but settles nothing."""

    store: Store
    user_id: str
    clock: Callable[[], datetime]
    note: Callable[[str, int, str], None]
    dry_run: bool
    max_attempts: int
    audit_retention_days: int
    # What this cycle did to each activity, for its `sync.cycle` audit event.
    items: list[dict[str, Any]] = field(default_factory=list)

    def _item(
        self, garmin_id: int, outcome: str, detail: str, activity: GarminActivity | None = None
    ) -> None:
        self.items.append(
            {
                "garminActivityId": garmin_id,
                "outcome": outcome,
                "name": activity.name if activity else "",
                "startUtc": activity.start_utc.isoformat() if activity else None,
                "detail": detail[:300],
            }
        )

    def reject_record(self, record: object, reason: str) -> None:
        """A Garmin listing record that is no activity: skipped, and recorded as such
        when it carries a usable id the ledger does not know yet."""
        garmin_id = record.get("activityId") if isinstance(record, dict) else None
        log.warning("garmin.bad_record", extra={"userId": self.user_id, "reason": reason})
        if isinstance(garmin_id, int) and not isinstance(garmin_id, bool) and garmin_id > 0:
            self.note(UploadOutcome.SKIPPED, garmin_id, reason)
            self._item(garmin_id, UploadOutcome.SKIPPED, f"invalid activity record: {reason}")
            if not self.dry_run:
                existing = self.store.get_uploads(self.user_id, [garmin_id]).get(garmin_id)
                if existing is None:
                    self.put(
                        LedgerEntry(
                            user_id=self.user_id,
                            garmin_activity_id=garmin_id,
                            external_id=external_id_for(garmin_id),
                            outcome=UploadOutcome.SKIPPED,
                            updated_at=self.clock(),
                            detail=f"invalid activity record: {reason}",
                        )
                    )

    def fail(
        self,
        activity: GarminActivity,
        entry: LedgerEntry,
        error: object,
        *,
        may_give_up: bool = True,
    ) -> LedgerEntry:
        message = (
            f"{type(error).__name__}: {error}" if isinstance(error, Exception) else str(error)
        )[:300]
        now = self.clock()
        attempts = max(entry.attempts, 1)
        if may_give_up and attempts >= self.max_attempts:
            dead = replace(
                self.entry(activity, entry, UploadOutcome.DEAD, message),
                attempts=attempts,
                next_retry_at=None,
            )
            self.put(dead)
            self.note(UploadOutcome.DEAD, activity.activity_id, message)
            self._item(activity.activity_id, UploadOutcome.DEAD, message, activity)
            self.audit("upload.gave_up", {"activityId": activity.activity_id, "error": message})
            log.error(
                "upload.gave_up",
                extra={
                    "userId": self.user_id,
                    "activityId": activity.activity_id,
                    "attempts": attempts,
                    "error": message,
                },
            )
            return dead
        failed = replace(
            self.entry(activity, entry, UploadOutcome.FAILED, message),
            attempts=attempts,
            next_retry_at=next_retry_at(now, attempts),
            upload_id=None,
        )
        self.put(failed)
        self.note(UploadOutcome.FAILED, activity.activity_id, message)
        self._item(activity.activity_id, UploadOutcome.FAILED, message, activity)
        self.items[-1]["attempts"] = attempts
        log.warning(
            "upload.failed",
            extra={
                "userId": self.user_id,
                "activityId": activity.activity_id,
                "attempts": attempts,
                "error": message,
                "nextRetryAt": failed.next_retry_at.isoformat() if failed.next_retry_at else None,
            },
        )
        return failed

    def settle(
        self,
        activity: GarminActivity,
        entry: LedgerEntry | None,
        outcome: UploadOutcome,
        detail: str,
        *,
        strava_id: int | None = None,
    ) -> LedgerEntry:
        settled = replace(
            self.entry(activity, entry, outcome, detail),
            strava_activity_id=strava_id,
            next_retry_at=None,
        )
        self.note(outcome, activity.activity_id, detail)
        self._item(activity.activity_id, outcome, detail, activity)
        self.items[-1]["stravaActivityId"] = strava_id
        if not self.dry_run:
            self.put(settled)
        log.info(
            "upload.settled",
            extra={
                "outcome": outcome.value,
                "userId": self.user_id,
                "activityId": activity.activity_id,
                "stravaActivityId": strava_id,
                "detail": detail,
            },
        )
        return settled

    def entry(
        self,
        activity: GarminActivity,
        entry: LedgerEntry | None,
        outcome: UploadOutcome,
        detail: str,
    ) -> LedgerEntry:
        """`entry` (or a new one for `activity`) with this outcome, detail and time."""
        base = entry or LedgerEntry(
            user_id=self.user_id,
            garmin_activity_id=activity.activity_id,
            external_id=external_id_for(activity.activity_id),
            outcome=outcome,
            updated_at=self.clock(),
        )
        return replace(
            base,
            outcome=outcome,
            detail=detail,
            updated_at=self.clock(),
            activity_name=activity.name,
            type_key=activity.type_key,
            start_utc=activity.start_utc,
        )

    def put(self, entry: LedgerEntry) -> None:
        self.store.put_upload(entry)

    def audit(self, kind: str, detail: dict[str, object]) -> None:
        self.store.add_audit(
            AuditEvent(
                user_id=self.user_id,
                at=self.clock(),
                kind=kind,
                event_id=uuid.uuid4().hex,
                detail=dict(detail),
            ),
            retention_days=self.audit_retention_days,
        )

    def cycle(self, report: _Report, *, duration_ms: int) -> None:
        """The cycle's own audit event (`sync.cycle`), idle cycles included: what
        `garmin2strava history` and the status page read back."""
        items = self.items[:MAX_CYCLE_ITEMS]
        detail: dict[str, object] = {
            "ok": report.ok,
            "durationMs": duration_ms,
            "outcomes": {k: int(v) for k, v in report.outcomes.items()},
            "error": report.error,
            "stopped": report.skipped_reason,
            "deferredUntil": report.deferred_until.isoformat() if report.deferred_until else None,
            "items": items,
        }
        if len(self.items) > len(items):
            detail["itemsOmitted"] = len(self.items) - len(items)
        self.audit("sync.cycle", detail)
