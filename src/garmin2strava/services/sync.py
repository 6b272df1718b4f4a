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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from garmin2strava.domain.activities import (
    external_id_for,
    is_indoor,
    oldest_first,
    parse_activity,
)
from garmin2strava.domain.matching import find_match, workout_as_strava_activity
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    AuditEvent,
    GarminActivity,
    LedgerEntry,
    StravaActivity,
    UploadOutcome,
    UploadStatus,
)
from garmin2strava.domain.uploads import UploadState, next_retry_at, read_upload_status
from garmin2strava.errors import (
    FileRejected,
    GarminAuthError,
    GarminNotFound,
    GarminRateLimited,
    GarminRefused,
    InvalidActivity,
    RateLimited,
    StoreConflict,
    StravaAuthError,
    TransientError,
)
from garmin2strava.ports import ActivityFiles, GarminPort, Store, StravaPort

__all__ = ["CycleReport", "SyncConfig", "SyncDeps", "sync_account"]

log = logging.getLogger(__name__)

# A Strava activity list query covers a group of candidates whose start times lie
# within this span; wider gaps get a query of their own.
_QUERY_SPAN = timedelta(days=3)
_QUERY_PAGE = 200
_NEEDS_EXISTENCE_CHECK = frozenset({UploadOutcome.PENDING, UploadOutcome.FAILED})


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
            store.release_lease(user_id, owner)
            cycle.record_cycle(started)
    return report


def _not_syncable(account: Account, now: datetime) -> str:
    if not account.enabled:
        return "account disabled"
    if account.status is not AccountStatus.ACTIVE:
        detail = f": {account.status_detail}" if account.status_detail else ""
        return f"account {account.status.value}{detail}"
    if account.garmin_backoff_until and now < account.garmin_backoff_until:
        return f"Garmin rate limit: backing off until {account.garmin_backoff_until.isoformat()}"
    return ""


class _Cycle:
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
        self._strava_seen: dict[int, list[StravaActivity]] = {}
        self._awaiting: list[tuple[GarminActivity, LedgerEntry]] = []

    # -- lazily built clients ----------------------------------------------------------
    @property
    def garmin(self) -> GarminPort:
        if self._garmin is None:
            self._garmin = self.deps.garmin()
        return self._garmin

    @property
    def strava(self) -> StravaPort:
        if self._strava is None:
            self._strava = self.deps.strava()
        return self._strava

    def _checkpoint(self, step: str) -> None:
        if self.deps.checkpoint is not None:
            self.deps.checkpoint(step)

    # -- the cycle ---------------------------------------------------------------------
    def run(self, activities: Sequence[GarminActivity] | None) -> None:
        try:
            listed = self._list_garmin() if activities is None else list(activities)
            ledger = self.store.get_uploads(self.user_id, [a.activity_id for a in listed])
            todo = self._candidates(listed, ledger)
            self._settle_processing(todo, ledger)
            todo = [a for a in todo if not self._settled(ledger.get(a.activity_id))]
            self._prefetch_strava(todo, ledger)
            for activity in todo:
                if self.deps.stop.is_set():
                    log.info("sync.stopping", extra={"userId": self.user_id})
                    break
                self._renew_lease()
                self._handle(activity, ledger.get(activity.activity_id))
            self._poll_uploads()
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

    def _list_garmin(self) -> list[GarminActivity]:
        records = self.garmin.list_activities(start=0, limit=self.config.lookback)
        parsed: list[GarminActivity] = []
        for record in records:
            try:
                parsed.append(parse_activity(record))
            except InvalidActivity as exc:
                self._reject_record(record, str(exc))
        return parsed

    def _reject_record(self, record: object, reason: str) -> None:
        garmin_id = record.get("activityId") if isinstance(record, dict) else None
        log.warning("garmin.bad_record", extra={"userId": self.user_id, "reason": reason})
        if isinstance(garmin_id, int) and not isinstance(garmin_id, bool) and garmin_id > 0:
            self.report.note(UploadOutcome.SKIPPED, garmin_id, reason)
            if not self.dry_run:
                existing = self.store.get_uploads(self.user_id, [garmin_id]).get(garmin_id)
                if existing is None:
                    self._put(
                        LedgerEntry(
                            user_id=self.user_id,
                            garmin_activity_id=garmin_id,
                            external_id=external_id_for(garmin_id),
                            outcome=UploadOutcome.SKIPPED,
                            updated_at=self.deps.clock(),
                            detail=f"invalid activity record: {reason}",
                        )
                    )

    def _candidates(
        self, listed: Sequence[GarminActivity], ledger: dict[int, LedgerEntry]
    ) -> list[GarminActivity]:
        """Unsettled and due activities of the wanted types, plus unsettled ledger
        entries that have scrolled out of the listing. Oldest first."""
        now = self.deps.clock()
        chosen: dict[int, GarminActivity] = {}
        for activity in listed:
            entry = ledger.get(activity.activity_id)
            if self._settled(entry) or not self.config.wants_type(activity.type_key):
                continue
            if entry is None or self._due(entry, now):
                chosen[activity.activity_id] = activity
        for entry in self.store.list_unsettled_uploads(self.user_id):
            if entry.garmin_activity_id in chosen or not self._due(entry, now):
                continue
            if entry.start_utc is None or entry.garmin_activity_id in {
                a.activity_id for a in listed
            }:
                continue
            ledger[entry.garmin_activity_id] = entry
            chosen[entry.garmin_activity_id] = _activity_from_entry(entry)
        return oldest_first(chosen.values())

    @staticmethod
    def _settled(entry: LedgerEntry | None) -> bool:
        return entry is not None and entry.outcome.settled

    @staticmethod
    def _due(entry: LedgerEntry, now: datetime) -> bool:
        if entry.outcome is UploadOutcome.FAILED and entry.next_retry_at:
            return entry.next_retry_at <= now
        return True

    # -- uploads Strava is still processing ----------------------------------------------
    def _settle_processing(
        self, todo: Iterable[GarminActivity], ledger: dict[int, LedgerEntry]
    ) -> None:
        for activity in todo:
            entry = ledger.get(activity.activity_id)
            if entry is None or entry.outcome is not UploadOutcome.PROCESSING:
                continue
            if entry.upload_id is None or self.dry_run:
                continue
            status = self.strava.get_upload(entry.upload_id)
            settled = self._apply_upload_status(activity, entry, status)
            ledger[activity.activity_id] = settled

    # -- existence check -----------------------------------------------------------------
    def _prefetch_strava(
        self, todo: Sequence[GarminActivity], ledger: dict[int, LedgerEntry]
    ) -> None:
        """One activity-list query per group of nearby candidates that the mirror
        does not cover (at most one per candidate, usually one for the whole batch)."""
        need = [
            a
            for a in todo
            if not a.manual
            and not self._mirror_covers(a)
            and _needs_existence_check(ledger.get(a.activity_id))
        ]
        tolerance = timedelta(seconds=self.config.match_tolerance_s + 1)
        for group in _groups_by_span(need, _QUERY_SPAN):
            after = group[0].start_utc - tolerance
            before = group[-1].start_utc + tolerance
            found = list(self._list_strava(after, before))
            for activity in group:
                self._strava_seen[activity.activity_id] = found

    def _list_strava(self, after: datetime, before: datetime) -> Iterable[StravaActivity]:
        page = 1
        while True:
            batch = self.strava.list_activities(
                after=after, before=before, page=page, per_page=_QUERY_PAGE
            )
            yield from batch
            if len(batch) < _QUERY_PAGE:
                return
            page += 1

    def _mirror_covers(self, activity: GarminActivity) -> bool:
        since = self.account.mirror_covers_since
        return since is not None and activity.start_utc >= since

    def _existing_on_strava(self, activity: GarminActivity) -> tuple[int, str] | None:
        tolerance = timedelta(seconds=self.config.match_tolerance_s)
        if self._mirror_covers(activity):
            rows = self.store.workouts_starting_between(
                self.user_id, activity.start_utc - tolerance, activity.start_utc + tolerance
            )
            pool = [workout_as_strava_activity(w) for w in rows if not w.is_deleted]
            how_prefix = "mirror"
        else:
            if activity.activity_id not in self._strava_seen:
                after = activity.start_utc - tolerance - timedelta(seconds=1)
                before = activity.start_utc + tolerance + timedelta(seconds=1)
                self._strava_seen[activity.activity_id] = list(self._list_strava(after, before))
            pool = self._strava_seen[activity.activity_id]
            how_prefix = "strava"
        match = find_match(activity, pool, tolerance_s=self.config.match_tolerance_s)
        if match is None:
            return None
        return match.strava_activity_id, f"{how_prefix}:{match.how}"

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
        original = self._download(activity, entry)
        if original is None:
            return
        with tempfile.TemporaryDirectory(prefix="g2s-") as workdir:
            try:
                prepared = self.deps.files.prepare(original, Path(workdir))
            except FileRejected as exc:
                self._settle(activity, entry, UploadOutcome.SKIPPED, f"file rejected: {exc}")
                log.warning(
                    "upload.file_rejected",
                    extra={"userId": self.user_id, "activityId": garmin_id, "reason": str(exc)},
                )
                return
            self._upload(activity, entry, prepared.path, prepared.data_type)

    def _download(self, activity: GarminActivity, entry: LedgerEntry | None) -> bytes | None:
        """The ORIGINAL zip, or None once the ledger says why there is none."""
        try:
            return self.garmin.download_original(activity.activity_id)
        except GarminNotFound:
            self._settle(activity, entry, UploadOutcome.SKIPPED, "no original file (manual?)")
        except GarminRefused as exc:
            # The same answer on every attempt: settle now, go on with the others.
            self._settle(activity, entry, UploadOutcome.SKIPPED, f"download refused: {exc}")
        except TransientError as exc:
            # Garmin's outage, not this run's fault: retried at the capped backoff (up
            # to 6 h apart) however long it lasts, never given up as `dead`.
            attempt = self._entry(activity, entry, UploadOutcome.FAILED, "")
            attempt = replace(attempt, attempts=attempt.attempts + 1)
            self._fail(activity, attempt, exc, may_give_up=False)
        return None

    def _settle_if_known(self, activity: GarminActivity, entry: LedgerEntry | None) -> bool:
        """Settle without uploading: a manual activity, or one already on Strava."""
        if activity.manual:
            self._settle(activity, entry, UploadOutcome.SKIPPED, "manual activity: no file")
            return True
        existing = self._existing_on_strava(activity)
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
        self._settle(activity, entry, outcome, how, strava_id=strava_id)
        return True

    def _upload(
        self, activity: GarminActivity, entry: LedgerEntry | None, path: Path, data_type: str
    ) -> None:
        attempts = (entry.attempts if entry else 0) + 1
        intent = self._entry(activity, entry, UploadOutcome.PENDING, "upload requested")
        intent = replace(intent, attempts=attempts, next_retry_at=None)
        self._checkpoint("intent")
        # Intent first: a crash after the upload request is reconciled by the next
        # cycle, which finds our external_id on Strava before it uploads again.
        try:
            self._put(intent)
        except StoreConflict:
            # The store refuses an intent over a settled entry: another runner (one
            # whose lease we outlived) settled this run since we read the ledger.
            log.warning(
                "upload.settled_elsewhere",
                extra={"userId": self.user_id, "activityId": activity.activity_id},
            )
            return
        self._checkpoint("upload")
        try:
            status = self.strava.upload(
                path,
                data_type=data_type,
                external_id=intent.external_id,
                name=activity.name or "Run",
                description=self.config.upload_description,
                trainer=is_indoor(activity.type_key),
            )
        except RateLimited:
            # Refused before it was sent (or with a 429): nothing reached Strava.
            self._put(entry or replace(intent, attempts=attempts - 1))
            raise
        except (StravaAuthError, GarminAuthError):
            raise
        except Exception as exc:  # noqa: BLE001 (any failure of one upload is recorded and retried)
            self._fail(activity, intent, exc)
            return
        processing = replace(
            intent, outcome=UploadOutcome.PROCESSING, upload_id=status.upload_id, detail=""
        )
        self._checkpoint("record")
        self._put(processing)
        if read_upload_status(status).state is UploadState.PROCESSING:
            self._awaiting.append((activity, processing))
        else:
            self._apply_upload_status(activity, processing, status)

    def _poll_uploads(self) -> None:
        """One wait for the whole batch, then one status read per upload; what is
        still processing then is settled by a later cycle, never by waiting longer."""
        if not self._awaiting or self.deps.stop.is_set():
            return
        self.deps.sleep(self.config.poll_delay_s)
        self._renew_lease()
        while self._awaiting:
            activity, entry = self._awaiting[0]
            assert entry.upload_id is not None  # set when the entry became PROCESSING
            self._checkpoint("poll")
            status = self.strava.get_upload(entry.upload_id)
            self._apply_upload_status(activity, entry, status)
            self._awaiting.pop(0)

    def _apply_upload_status(
        self, activity: GarminActivity, entry: LedgerEntry, status: UploadStatus
    ) -> LedgerEntry:
        verdict = read_upload_status(status)
        match verdict.state:
            case UploadState.READY:
                return self._settle(
                    activity, entry, UploadOutcome.UPLOADED, "", strava_id=verdict.activity_id
                )
            case UploadState.DUPLICATE:
                return self._settle(
                    activity,
                    entry,
                    UploadOutcome.DUPLICATE,
                    verdict.message[:300],
                    strava_id=verdict.activity_id,
                )
            case UploadState.PROCESSING:
                return entry
            case UploadState.ERROR | UploadState.DELETED:
                return self._fail(activity, entry, verdict.message)

    def _fail(
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
        now = self.deps.clock()
        attempts = max(entry.attempts, 1)
        if may_give_up and attempts >= self.config.max_attempts:
            dead = replace(
                self._entry(activity, entry, UploadOutcome.DEAD, message),
                attempts=attempts,
                next_retry_at=None,
            )
            self._put(dead)
            self.report.note(UploadOutcome.DEAD, activity.activity_id, message)
            self._audit("upload.gave_up", {"activityId": activity.activity_id, "error": message})
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
            self._entry(activity, entry, UploadOutcome.FAILED, message),
            attempts=attempts,
            next_retry_at=next_retry_at(now, attempts),
            upload_id=None,
        )
        self._put(failed)
        self.report.note(UploadOutcome.FAILED, activity.activity_id, message)
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

    def _settle(
        self,
        activity: GarminActivity,
        entry: LedgerEntry | None,
        outcome: UploadOutcome,
        detail: str,
        *,
        strava_id: int | None = None,
    ) -> LedgerEntry:
        settled = replace(
            self._entry(activity, entry, outcome, detail),
            strava_activity_id=strava_id,
            next_retry_at=None,
        )
        self.report.note(outcome, activity.activity_id, detail)
        if not self.dry_run:
            self._put(settled)
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

    def _entry(
        self,
        activity: GarminActivity,
        entry: LedgerEntry | None,
        outcome: UploadOutcome,
        detail: str,
    ) -> LedgerEntry:
        base = entry or LedgerEntry(
            user_id=self.user_id,
            garmin_activity_id=activity.activity_id,
            external_id=external_id_for(activity.activity_id),
            outcome=outcome,
            updated_at=self.deps.clock(),
        )
        return replace(
            base,
            outcome=outcome,
            detail=detail,
            updated_at=self.deps.clock(),
            activity_name=activity.name,
            type_key=activity.type_key,
            start_utc=activity.start_utc,
        )

    def _put(self, entry: LedgerEntry) -> None:
        self.store.put_upload(entry)

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
        until = self.deps.clock() + timedelta(seconds=self.config.garmin_backoff_s)
        self.report.ok = False
        self.report.error = f"Garmin answered 429; no Garmin request before {until.isoformat()}"
        if not self.dry_run:
            self.account = replace(self.account, garmin_backoff_until=until)
            self.store.put_account(self.account)
            self._audit("garmin.rate_limited", {"until": until.isoformat()})
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
            self._audit(kind, {"error": detail})
        log.error(kind, extra={"userId": self.user_id, "error": detail, "hint": hint})

    def _audit(self, kind: str, detail: dict[str, object]) -> None:
        self.store.add_audit(
            AuditEvent(
                user_id=self.user_id,
                at=self.deps.clock(),
                kind=kind,
                event_id=uuid.uuid4().hex,
                detail=dict(detail),
            ),
            retention_days=self.config.audit_retention_days,
        )

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
        if report.outcomes or not report.ok:
            self._audit("sync.cycle", {"ok": report.ok, "outcomes": summary, "error": report.error})
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
    )


def _groups_by_span(
    activities: Sequence[GarminActivity], span: timedelta
) -> list[list[GarminActivity]]:
    groups: list[list[GarminActivity]] = []
    for activity in oldest_first(activities):
        if groups and activity.start_utc - groups[-1][0].start_utc <= span:
            groups[-1].append(activity)
        else:
            groups.append([activity])
    return groups


def _needs_existence_check(entry: LedgerEntry | None) -> bool:
    return entry is None or entry.outcome in _NEEDS_EXISTENCE_CHECK
