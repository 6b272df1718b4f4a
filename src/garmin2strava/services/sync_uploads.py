"""Uploads to Strava and their processing status (DESIGN.md "Uploader", steps 5-6).

Intent before upload; one wait per cycle before one status read per upload; what
Strava is still processing then is settled by a later cycle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from garmin2strava.domain.models import GarminActivity, LedgerEntry, UploadOutcome, UploadStatus
from garmin2strava.domain.uploads import UploadState, read_upload_status
from garmin2strava.errors import GarminAuthError, RateLimited, StoreConflict, StravaAuthError
from garmin2strava.ports import StravaPort
from garmin2strava.services.sync_recording import CycleRecorder

__all__ = ["StravaUploads", "upload_description"]

# The uploader's events keep the logger name they have always had, whichever of the
# sync modules writes them ("logger" in the JSON log lines).
log = logging.getLogger("garmin2strava.services.sync")


def upload_description(garmin: str, configured: str | None) -> str | None:
    """The activity's own Garmin description first, then G2S_UPLOAD_DESCRIPTION,
    a blank line between them; None when there is neither."""
    parts = [part.strip() for part in (garmin, configured or "") if part and part.strip()]
    return "\n\n".join(parts) or None


@dataclass(slots=True, kw_only=True)
class StravaUploads:
    """One account's uploads in one cycle, and the uploads still awaiting Strava's
    processing. `strava` builds the client when first needed; `renew_lease` ends the
    cycle when the lease is lost; `checkpoint` is the crash-injection test hook."""

    strava: Callable[[], StravaPort]
    records: CycleRecorder
    renew_lease: Callable[[], None]
    sleep: Callable[[float], None]
    stop: threading.Event
    checkpoint: Callable[[str], None] | None
    upload_description: str | None
    poll_delay_s: float
    dry_run: bool
    _awaiting: list[tuple[GarminActivity, LedgerEntry]] = field(default_factory=list, init=False)

    def _checkpoint(self, step: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(step)

    def settle_processing(
        self, todo: Iterable[GarminActivity], ledger: dict[int, LedgerEntry]
    ) -> None:
        """Read the status of earlier cycles' uploads that Strava was still processing."""
        for activity in todo:
            entry = ledger.get(activity.activity_id)
            if entry is None or entry.outcome is not UploadOutcome.PROCESSING:
                continue
            if entry.upload_id is None or self.dry_run:
                continue
            status = self.strava().get_upload(entry.upload_id)
            settled = self._apply_upload_status(activity, entry, status)
            ledger[activity.activity_id] = settled

    def upload(
        self, activity: GarminActivity, entry: LedgerEntry | None, path: Path, data_type: str
    ) -> None:
        attempts = (entry.attempts if entry else 0) + 1
        intent = self.records.entry(activity, entry, UploadOutcome.PENDING, "upload requested")
        intent = replace(intent, attempts=attempts, next_retry_at=None)
        self._checkpoint("intent")
        # Intent first: a crash after the upload request is reconciled by the next
        # cycle, which finds our external_id on Strava before it uploads again.
        try:
            self.records.put(intent)
        except StoreConflict:
            # The store refuses an intent over a settled entry: another runner (one
            # whose lease we outlived) settled this run since we read the ledger.
            log.warning(
                "upload.settled_elsewhere",
                extra={"userId": self.records.user_id, "activityId": activity.activity_id},
            )
            return
        self._checkpoint("upload")
        try:
            status = self.strava().upload(
                path,
                data_type=data_type,
                external_id=intent.external_id,
                name=activity.name or "Run",
                description=upload_description(activity.description, self.upload_description),
                trainer=activity.indoor,
            )
        except RateLimited:
            # Refused before it was sent (or with a 429): nothing reached Strava.
            self.records.put(entry or replace(intent, attempts=attempts - 1))
            raise
        except (StravaAuthError, GarminAuthError):
            raise
        except Exception as exc:  # noqa: BLE001 (any failure of one upload is recorded and retried)
            self.records.fail(activity, intent, exc)
            return
        processing = replace(
            intent, outcome=UploadOutcome.PROCESSING, upload_id=status.upload_id, detail=""
        )
        self._checkpoint("record")
        self.records.put(processing)
        if read_upload_status(status).state is UploadState.PROCESSING:
            self._awaiting.append((activity, processing))
        else:
            self._apply_upload_status(activity, processing, status)

    def poll(self) -> None:
        """One wait for the whole batch, then one status read per upload; what is
        still processing then is settled by a later cycle, never by waiting longer."""
        if not self._awaiting or self.stop.is_set():
            return
        self.sleep(self.poll_delay_s)
        self.renew_lease()
        while self._awaiting:
            activity, entry = self._awaiting[0]
            assert entry.upload_id is not None  # set when the entry became PROCESSING
            self._checkpoint("poll")
            status = self.strava().get_upload(entry.upload_id)
            self._apply_upload_status(activity, entry, status)
            self._awaiting.pop(0)

    def _apply_upload_status(
        self, activity: GarminActivity, entry: LedgerEntry, status: UploadStatus
    ) -> LedgerEntry:
        verdict = read_upload_status(status)
        match verdict.state:
            case UploadState.READY:
                return self.records.settle(
                    activity, entry, UploadOutcome.UPLOADED, "", strava_id=verdict.activity_id
                )
            case UploadState.DUPLICATE:
                return self.records.settle(
                    activity,
                    entry,
                    UploadOutcome.DUPLICATE,
                    verdict.message[:300],
                    strava_id=verdict.activity_id,
                )
            case UploadState.PROCESSING:
                return entry
            case UploadState.ERROR | UploadState.DELETED:
                return self.records.fail(activity, entry, verdict.message)
