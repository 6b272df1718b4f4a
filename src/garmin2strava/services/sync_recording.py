"""What one sync cycle writes down: ledger entries (settled, failed, dead, skipped
records), audit events and the notes of its report."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from garmin2strava.domain.activities import external_id_for
from garmin2strava.domain.models import AuditEvent, GarminActivity, LedgerEntry, UploadOutcome
from garmin2strava.domain.uploads import next_retry_at
from garmin2strava.ports import Store

__all__ = ["CycleRecorder"]

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

    def reject_record(self, record: object, reason: str) -> None:
        """A Garmin listing record that is no activity: skipped, and recorded as such
        when it carries a usable id the ledger does not know yet."""
        garmin_id = record.get("activityId") if isinstance(record, dict) else None
        log.warning("garmin.bad_record", extra={"userId": self.user_id, "reason": reason})
        if isinstance(garmin_id, int) and not isinstance(garmin_id, bool) and garmin_id > 0:
            self.note(UploadOutcome.SKIPPED, garmin_id, reason)
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
