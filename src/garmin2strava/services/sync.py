"""One sync cycle for one account (DESIGN.md "Uploader").

The cycle never sleeps on a budget and never waits for Strava's processing: what
cannot be finished now stays in the ledger and is settled by a later cycle.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    GarminActivity,
    LedgerEntry,
    UploadOutcome,
)
from garmin2strava.errors import (
    FileRejected,
    GarminAuthError,
    GarminNotFound,
    GarminRateLimited,
    GarminRefused,
    RateLimited,
    StravaAppInactive,
    StravaAuthError,
    TransientError,
)
from garmin2strava.ports import ActivityFiles, GarminPort, Store, StravaPort
from garmin2strava.services.account_control import pause_reason, paused_reason_of
from garmin2strava.services.sync_candidates import choose_candidates, is_settled, list_garmin
from garmin2strava.services.sync_matching import StravaMatcher
from garmin2strava.services.sync_recording import CycleRecorder
from garmin2strava.services.sync_uploads import StravaUploads

__all__ = ["CycleReport", "SyncConfig", "SyncDeps", "sync_account"]

log = logging.getLogger(__name__)

_MAX_GARMIN_BACKOFF_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SyncConfig:
    wants_type: Callable[[str], bool]
    lookback: int = 20
    max_attempts: int = 5
    match_tolerance_s: int = 120
    garmin_backoff_s: int = 6 * 3600
    upload_description: str | None = None
    # Renewed before every activity, so it only has to outlive one download+upload; a
    # runner killed with SIGKILL blocks the account for at most this long.
    lease_ttl_s: int = 180
    # Seconds to wait, once per cycle after its uploads, before one status poll per
    # upload. Strava processes most files in under 2 s; what is not ready then is
    # settled by a later cycle.
    poll_delay_s: float = 2.0
    audit_retention_days: int = 7


@dataclass(slots=True)
class SyncDeps:
    """What one account's cycle works with. `strava` is built only when first needed,
    so a cycle with nothing to do makes no Strava request and reads no Strava token."""

    store: Store
    garmin: Callable[[], GarminPort]
    strava: Callable[[], StravaPort]
    files: ActivityFiles
    config: SyncConfig
    clock: Callable[[], datetime]
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = field(default_factory=threading.Event)
    # Test hook for crash injection: called with the name of each step just before
    # it happens ("intent", "upload", "record", ...). Production passes None.
    checkpoint: Callable[[str], None] | None = None


@dataclass(slots=True)
class CycleReport:
    user_id: str
    ok: bool = True
    skipped_reason: str = ""
    outcomes: Counter[str] = field(default_factory=Counter)
    actions: list[tuple[str, int, str]] = field(default_factory=list)  # (outcome, id, detail)
    deferred_until: datetime | None = None
    error: str = ""

    def note(self, outcome: str, garmin_id: int, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        self.actions.append((outcome, garmin_id, detail))


class _StopCycle(Exception):
    """Ends the cycle early (budget spent, account needs a human)."""


def sync_account(
    deps: SyncDeps,
    user_id: str,
    *,
    dry_run: bool = False,
    activities: Sequence[GarminActivity] | None = None,
) -> CycleReport:
    """Run one cycle for `user_id`: lease, list, diff, check, upload, record, release.

    `activities` replaces the Garmin listing (backfill walks older history itself)."""
    report = CycleReport(user_id)
    store, now = deps.store, deps.clock()
    account = store.get_account(user_id)
    if account is None:
        report.ok, report.error = False, f"no account {user_id!r}"
        return report
    reason = _not_syncable(account, now)
    if reason:
        report.skipped_reason = reason
        report.ok = account.status is AccountStatus.ACTIVE  # a backoff is not a failure
        return report
    owner = f"{uuid.uuid4().hex[:12]}"
    if not dry_run and not store.acquire_lease(
        user_id, owner, now=now, ttl_seconds=deps.config.lease_ttl_s
    ):
        report.skipped_reason = "another runner holds this account's lease"
        return report
    started = time.monotonic()
    cycle = _Cycle(deps, account, report, owner, dry_run=dry_run)
    try:
        cycle.run(activities)
    except _StopCycle:
        pass
    finally:
        if not dry_run:
            try:  # recorded under the lease: `accounts remove` waits for it
                cycle.record_cycle(started)
            finally:
                store.release_lease(user_id, owner)
    return report


def _not_syncable(account: Account, now: datetime) -> str:
    if not account.enabled:
        return paused_reason_of(account)
    if account.status is not AccountStatus.ACTIVE:
        detail = f": {account.status_detail}" if account.status_detail else ""
        return f"account {account.status.value}{detail}"
    if account.garmin_backoff_until and now < account.garmin_backoff_until:
        return f"Garmin rate limit: backing off until {account.garmin_backoff_until.isoformat()}"
    return ""


class _Cycle:
    """One account's cycle: the orchestration of its steps, its lease and what happens
    to the account; the steps' work is done by the collaborators it builds."""

    def __init__(
        self,
        deps: SyncDeps,
        account: Account,
        report: CycleReport,
        owner: str,
        *,
        dry_run: bool,
    ) -> None:
        self.deps = deps
        self.store = deps.store
        self.config = deps.config
        self.account = account
        self.user_id = account.user_id
        self.report = report
        self.owner = owner
        self.dry_run = dry_run
        self._garmin: GarminPort | None = None
        self._strava: StravaPort | None = None
        self.records = CycleRecorder(
            store=deps.store,
            user_id=account.user_id,
            clock=deps.clock,
            note=report.note,
            dry_run=dry_run,
            max_attempts=deps.config.max_attempts,
            audit_retention_days=deps.config.audit_retention_days,
        )
        self.matcher = StravaMatcher(
            store=deps.store,
            strava=self.strava,
            account=account,
            tolerance_s=deps.config.match_tolerance_s,
        )
        self.uploads = StravaUploads(
            strava=self.strava,
            records=self.records,
            renew_lease=self._renew_lease,
            sleep=deps.sleep,
            stop=deps.stop,
            checkpoint=deps.checkpoint,
            upload_description=deps.config.upload_description,
            poll_delay_s=deps.config.poll_delay_s,
            dry_run=dry_run,
        )

    # -- lazily built clients ----------------------------------------------------------
    def garmin(self) -> GarminPort:
        if self._garmin is None:
            self._garmin = self.deps.garmin()
        return self._garmin

    def strava(self) -> StravaPort:
        if self._strava is None:
            self._strava = self.deps.strava()
        return self._strava

    # -- the cycle ---------------------------------------------------------------------
    def run(self, activities: Sequence[GarminActivity] | None) -> None:
        try:
            listed = (
                list_garmin(
                    self.garmin(), limit=self.config.lookback, reject=self.records.reject_record
                )
                if activities is None
                else list(activities)
            )
            ledger = self.store.get_uploads(self.user_id, [a.activity_id for a in listed])
            todo = choose_candidates(
                listed,
                ledger,
                store=self.store,
                user_id=self.user_id,
                wants_type=self.config.wants_type,
                now=self.deps.clock(),
            )
            self.uploads.settle_processing(todo, ledger)
            todo = [a for a in todo if not is_settled(ledger.get(a.activity_id))]
            self.matcher.prefetch(todo, ledger)
            for activity in todo:
                if self.deps.stop.is_set():
                    log.info("sync.stopping", extra={"userId": self.user_id})
                    break
                if (paused := pause_reason(self.store, self.user_id)) is not None:
                    self.report.skipped_reason = paused
                    break
                self._renew_lease()
                self._handle(activity, ledger.get(activity.activity_id))
            self.uploads.poll()
        except StravaAppInactive as exc:
            # The application's state, said once by the adapter: no account is at fault.
            self.report.deferred_until = exc.until
            self.report.error = str(exc)
            log.info(
                "sync.strava_app_inactive",
                extra={"userId": self.user_id, "until": exc.until.isoformat()},
            )
        except RateLimited as exc:
            self.report.deferred_until = exc.until
            log.warning(
                "strava.budget_spent",
                extra={"userId": self.user_id, "until": exc.until.isoformat()},
            )
        except GarminRateLimited:
            self._garmin_backoff()
        except GarminAuthError as exc:
            self._needs_human(AccountStatus.NEEDS_GARMIN_LOGIN, "garmin.auth_failed", str(exc))
        except StravaAuthError as exc:
            self._needs_human(AccountStatus.NEEDS_STRAVA_AUTH, "strava.auth_failed", str(exc))
        except TransientError as exc:
            # An outage (Strava's existence check, Garmin's list): nothing was decided,
            # nothing is lost; the next cycle asks again.
            self.report.error = f"{exc}; retried next cycle"
            log.warning("sync.transient", extra={"userId": self.user_id, "error": str(exc)})

    # -- one activity --------------------------------------------------------------------
    def _handle(self, activity: GarminActivity, entry: LedgerEntry | None) -> None:
        garmin_id = activity.activity_id
        if entry is not None and entry.outcome is UploadOutcome.PROCESSING:
            return  # still processing on Strava: a later cycle polls it again
        if self._settle_if_known(activity, entry):
            return
        if self.dry_run:
            self.report.note("would_upload", garmin_id, activity.name)
            return
        # The work directory first: when the disk is full or the directory unwritable,
        # nothing is downloaded for nothing.
        try:
            with tempfile.TemporaryDirectory(prefix="g2s-") as workdir:
                original = self._download(activity, entry)
                if original is None:
                    return
                try:
                    prepared = self.deps.files.prepare(original, Path(workdir))
                except FileRejected as exc:
                    self._rejected(activity, entry, exc)
                    return
                del original  # the extracted file is on disk; the zip's bytes can go
                self.uploads.upload(activity, entry, prepared.path, prepared.data_type)
        except OSError as exc:
            self._local_failure(activity, entry, exc)

    def _rejected(
        self, activity: GarminActivity, entry: LedgerEntry | None, exc: Exception
    ) -> None:
        self.records.settle(activity, entry, UploadOutcome.SKIPPED, f"file rejected: {exc}")
        log.warning(
            "upload.file_rejected",
            extra={
                "userId": self.user_id,
                "activityId": activity.activity_id,
                "reason": str(exc),
            },
        )

    def _local_failure(
        self, activity: GarminActivity, entry: LedgerEntry | None, exc: OSError
    ) -> None:
        """The temporary directory cannot be written (full, unwritable, over a file size
        limit): this machine's fault, not the run's. Failed with a retry time, as often
        as it takes, never given up as `dead`."""
        reason = f"temporary directory unusable ({tempfile.gettempdir()}): {exc.strerror or exc}"
        attempt = self.records.entry(activity, entry, UploadOutcome.FAILED, "")
        attempt = replace(attempt, attempts=attempt.attempts + 1)
        self.records.fail(activity, attempt, reason, may_give_up=False)

    def _download(self, activity: GarminActivity, entry: LedgerEntry | None) -> bytes | None:
        """The ORIGINAL zip, or None once the ledger says why there is none."""
        try:
            return self.garmin().download_original(activity.activity_id)
        except GarminNotFound:
            self.records.settle(
                activity, entry, UploadOutcome.SKIPPED, "no original file (manual?)"
            )
        except GarminRefused as exc:
            # The same answer on every attempt: settle now, go on with the others.
            self.records.settle(activity, entry, UploadOutcome.SKIPPED, f"download refused: {exc}")
        except FileRejected as exc:
            # Over the size limit: stopped while downloading, the same on every attempt.
            self._rejected(activity, entry, exc)
        except TransientError as exc:
            # Garmin's outage, not this run's fault: retried at the capped backoff (up
            # to 6 h apart) however long it lasts, never given up as `dead`.
            attempt = self.records.entry(activity, entry, UploadOutcome.FAILED, "")
            attempt = replace(attempt, attempts=attempt.attempts + 1)
            self.records.fail(activity, attempt, exc, may_give_up=False)
        return None

    def _settle_if_known(self, activity: GarminActivity, entry: LedgerEntry | None) -> bool:
        """Settle without uploading: a manual activity, or one already on Strava."""
        if activity.manual:
            self.records.settle(activity, entry, UploadOutcome.SKIPPED, "manual activity: no file")
            return True
        existing = self.matcher.existing_on_strava(activity)
        if existing is None:
            return False
        strava_id, how = existing
        outcome = UploadOutcome.EXISTS
        if (
            entry is not None
            and entry.outcome is UploadOutcome.PENDING
            and how.endswith(":external_id")
        ):
            # Our own upload, made by a cycle that died before recording it.
            outcome = UploadOutcome.UPLOADED
            how = "reconciled: found our external_id after an interrupted cycle"
        self.records.settle(activity, entry, outcome, how, strava_id=strava_id)
        return True

    def _renew_lease(self) -> None:
        if self.dry_run:
            return
        renewed = self.store.acquire_lease(
            self.user_id, self.owner, now=self.deps.clock(), ttl_seconds=self.config.lease_ttl_s
        )
        if not renewed:
            self.report.skipped_reason = "lost the lease to another runner"
            raise _StopCycle

    # -- account-level outcomes ---------------------------------------------------------
    def _garmin_backoff(self) -> None:
        # Bounded here too: no setting may turn a 429 into an OverflowError.
        backoff_s = min(self.config.garmin_backoff_s, _MAX_GARMIN_BACKOFF_S)
        until = self.deps.clock() + timedelta(seconds=backoff_s)
        self.report.ok = False
        self.report.error = f"Garmin answered 429; no Garmin request before {until.isoformat()}"
        if not self.dry_run:
            self.account = replace(self.account, garmin_backoff_until=until)
            self.store.put_account(self.account)
            self.records.audit("garmin.rate_limited", {"until": until.isoformat()})
        log.error("garmin.rate_limited", extra={"userId": self.user_id, "until": until.isoformat()})

    def _needs_human(self, status: AccountStatus, kind: str, detail: str) -> None:
        self.report.ok = False
        self.report.error = detail
        hint = (
            "run `garmin2strava garmin login`"
            if status is AccountStatus.NEEDS_GARMIN_LOGIN
            else "run `garmin2strava get-token`"
        )
        if not self.dry_run:
            self.account = replace(self.account, status=status, status_detail=f"{detail}; {hint}")
            self.store.put_account(self.account)
            self.records.audit(kind, {"error": detail})
        log.error(kind, extra={"userId": self.user_id, "error": detail, "hint": hint})

    def record_cycle(self, started: float) -> None:
        report = self.report
        duration_ms = round((time.monotonic() - started) * 1000)
        summary = {k: int(v) for k, v in report.outcomes.items()}
        fresh = self.store.get_account(self.user_id) or self.account
        self.store.put_account(
            replace(
                fresh,
                last_cycle_at=self.deps.clock(),
                last_cycle_ok=report.ok,
                last_cycle_summary=summary,
            )
        )
        self.records.cycle(report, duration_ms=duration_ms)
        log.info(
            "sync.cycle",
            extra={
                "userId": self.user_id,
                "durationMs": duration_ms,
                "ok": report.ok,
                "outcomes": summary,
                "deferredUntil": report.deferred_until.isoformat()
                if report.deferred_until
                else None,
            },
        )
