"""One sync cycle for one account, top-down: the README's steps, in order.

    sync_account: lease -> list -> settle -> per activity (already on Strava? ->
    download and check -> intent, upload, record) -> poll once -> record the cycle

The rules each step applies are in domain.upload_rules; this module does the I/O and
holds the cycle's state in one `_Cycle` passed to every step. The cycle never sleeps
on a budget and never waits for Strava's processing: what cannot be finished now stays
in the ledger for a later cycle (docs/architecture.md, "The uploader").
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from garmin2strava.domain import idle, upload_rules
from garmin2strava.domain.conditions import GARMIN_REFUSED_FIX as REFUSED_FIX
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
from garmin2strava.domain.strava_finish import StravaFinish
from garmin2strava.errors import (
    FileRejected,
    GarminAuthError,
    GarminNetworkRefused,
    GarminNotFound,
    GarminRateLimited,
    GarminRefused,
    InvalidActivity,
    RateLimited,
    StoreConflict,
    StravaAppInactive,
    StravaAuthError,
    TransientError,
)
from garmin2strava.ports import (
    Accounts,
    ActivityFiles,
    AuditLog,
    GarminPort,
    LedgerMarks,
    StravaUploads,
    SyncLeases,
    UploadLedger,
    WorkoutQueries,
)
from garmin2strava.services import strava_finish
from garmin2strava.services.account_control import pause_reason, paused_reason_of
from garmin2strava.services.strava_finish import FinishConfig, FinishStore
from garmin2strava.services.write_trouble import WRITE_TROUBLE

__all__ = [
    "LEASE_HELD",
    "LEASE_LOST",
    "MAX_CYCLE_ITEMS",
    "CycleReport",
    "SyncConfig",
    "SyncDeps",
    "SyncStore",
    "refusal_wait",
    "sync_account",
]

log = logging.getLogger(__name__)

_MAX_GARMIN_BACKOFF_S = 30 * 24 * 3600
# Garmin's 403 (a refused network): the first wait, doubled per 403 in a row up to the cap.
REFUSAL_WAIT_FIRST = timedelta(hours=1)
REFUSAL_WAIT_MAX = timedelta(hours=24)
# What one `sync.cycle` audit event lists at most (a DynamoDB item stays far below its
# 400 KB); a backfill cycle beyond this counts the rest in `itemsOmitted`.
MAX_CYCLE_ITEMS = 100
# A cycle's skipped_reason when another runner is at work on the account.
LEASE_HELD = "another runner holds this account's lease"
LEASE_LOST = "lost the lease to another runner"


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
    # While the webhook settles uploads, how long an upload waits for its `create`
    # before a status poll settles it anyway (Strava may drop an event, a duplicate
    # never creates one).
    webhook_wait_s: float = 300.0
    # The first lease of a cycle, when shorter than lease_ttl_s (None: the same): long
    # enough to list Garmin and decide; a cycle that finds work renews it to
    # lease_ttl_s first. An idle cycle that writes nothing (idle_writes False) leaves
    # it to run out by itself.
    look_lease_s: int | None = None
    # What a cycle that finds nothing to do writes: True, the account's last-cycle time
    # (what the daemon's /healthz reads) and the lease's release; False (the Lambda,
    # where each request costs): nothing at all. No idle cycle writes an audit event.
    idle_writes: bool = True

    # Gear, feed muting and Garmin renames set on Strava after the upload.
    finish: FinishConfig = field(default_factory=FinishConfig)


class SyncStore(
    Accounts,
    UploadLedger,
    LedgerMarks,
    SyncLeases,
    AuditLog,
    WorkoutQueries,
    FinishStore,
    Protocol,
):
    """What one cycle keeps: the account, its ledger (and its idle mark), its lease,
    its audit trail; it reads the mirror to find what is already on Strava (and
    Strava's name of an upload), and caches the athlete's Strava gear."""


@dataclass(slots=True)
class SyncDeps:
    """What one account's cycle works with. `strava` is built only when first needed,
    so a cycle with nothing to do makes no Strava request and reads no Strava token."""

    store: SyncStore
    garmin: Callable[[], GarminPort]
    strava: Callable[[], StravaUploads]
    files: ActivityFiles
    config: SyncConfig
    clock: Callable[[], datetime]
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = field(default_factory=threading.Event)
    # Test hook for crash injection: called with the name of each step just before
    # it happens ("intent", "upload", "record", ...). Production passes None.
    checkpoint: Callable[[str], None] | None = None
    # True while the webhook is live and the mirror worker healthy (the daemon's
    # `run`): the worker's fetch of each `create` settles our uploads, so the cycle
    # polls only what has waited `webhook_wait_s` for one.
    webhook_settles: Callable[[], bool] = lambda: False
    # The lease's owner for every cycle of this runner (None: a new one per cycle). A
    # warm Lambda container keeps one, so its next invocation takes back the lease an
    # idle cycle left (invocations of one container never overlap).
    lease_owner: str | None = None
    # True where the mirror is kept live by the webhook (`run` with it, the Lambda
    # worker): Strava's current name of an upload is then known without a read, and a
    # Garmin rename may be carried.
    mirror_live: Callable[[], bool] = lambda: False


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


@dataclass(slots=True)
class _Cycle:
    """Everything one account's cycle knows, in one place; every step takes it."""

    deps: SyncDeps
    account: Account
    report: CycleReport
    owner: str
    dry_run: bool
    # The ledger entries of the cycle's activities, updated as they change.
    ledger: dict[int, LedgerEntry] = field(default_factory=dict)
    # What a Strava activity-list query answered, per candidate it covered.
    strava_seen: dict[int, list[StravaActivity]] = field(default_factory=dict)
    # This cycle's uploads that Strava was still processing when they were accepted.
    awaiting: list[tuple[GarminActivity, LedgerEntry]] = field(default_factory=list)
    # What this cycle did to each activity, for its `sync.cycle` audit event.
    items: list[dict[str, Any]] = field(default_factory=list)
    garmin_client: GarminPort | None = None
    strava_client: StravaUploads | None = None
    # Asked once, when the cycle starts: does the webhook settle this cycle's uploads?
    webhook_settles: bool = False
    # True once the lease was renewed to lease_ttl_s (a cycle that found work).
    full_lease: bool = False

    @property
    def user_id(self) -> str:
        return self.account.user_id

    @property
    def config(self) -> SyncConfig:
        return self.deps.config

    @property
    def store(self) -> SyncStore:
        return self.deps.store

    def garmin(self) -> GarminPort:
        if self.garmin_client is None:
            self.garmin_client = self.deps.garmin()
        return self.garmin_client

    def strava(self) -> StravaUploads:
        if self.strava_client is None:
            self.strava_client = self.deps.strava()
        return self.strava_client

    def checkpoint(self, step: str) -> None:
        if self.deps.checkpoint is not None:
            self.deps.checkpoint(step)


class _StopCycle(Exception):
    """Ends the cycle early (the lease was lost)."""


def sync_account(
    deps: SyncDeps,
    user_id: str,
    *,
    dry_run: bool = False,
    activities: Sequence[GarminActivity] | None = None,
    account: Account | None = None,
) -> CycleReport:
    """Run one cycle for `user_id`: lease, list, settle, per activity, poll, record.

    `activities` replaces the Garmin listing (backfill walks older history itself).
    `account`, when given, is the account as just read (sync_all's list), not read
    again. A dry run takes no lease, writes nothing and uploads nothing: it reports
    what it would do."""
    report = CycleReport(user_id)
    store, now = deps.store, deps.clock()
    if account is None:
        account = store.get_account(user_id)
    if account is None:
        report.ok, report.error = False, f"no account {user_id!r}"
        return report
    reason = _not_syncable(account, now)
    if reason:
        report.skipped_reason = reason
        report.ok = account.status is AccountStatus.ACTIVE  # a backoff is not a failure
        return report
    # 1. lease
    owner = deps.lease_owner or f"{uuid.uuid4().hex[:12]}"
    first_ttl_s = min(deps.config.look_lease_s or deps.config.lease_ttl_s, deps.config.lease_ttl_s)
    if not dry_run and not store.acquire_lease(user_id, owner, now=now, ttl_seconds=first_ttl_s):
        report.skipped_reason = LEASE_HELD
        return report
    started = time.monotonic()
    cycle = _Cycle(deps, account, report, owner, dry_run)
    cycle.full_lease = first_ttl_s >= deps.config.lease_ttl_s
    completed = False  # an exception on its way out is never an idle cycle
    try:
        _steps(cycle, activities)
        completed = True
    except _StopCycle:
        pass
    finally:
        if not dry_run:
            _finish(cycle, started, idle=completed and _was_idle(cycle, account))
    return report


def _finish(cycle: _Cycle, started: float, *, idle: bool) -> None:
    """6. record the cycle under the lease (`accounts remove` waits for it), release."""
    if idle and not cycle.config.idle_writes:
        log.info("sync.idle", extra={"userId": cycle.user_id})
        return  # nothing written: the first lease runs out, or this runner takes it back
    try:
        _record_cycle(cycle, started, audit=not idle)
    finally:
        cycle.store.release_lease(cycle.user_id, cycle.owner)


def _was_idle(cycle: _Cycle, account: Account) -> bool:
    """Nothing found, done, changed or gone wrong: no outcome, item, error, stop or
    deferral, and the account as it was read."""
    report = cycle.report
    return (
        report.ok
        and not report.outcomes
        and not cycle.items
        and not report.error
        and not report.skipped_reason
        and report.deferred_until is None
        and cycle.account is account
    )


def _not_syncable(account: Account, now: datetime) -> str:
    if not account.enabled:
        return paused_reason_of(account)
    if account.status is not AccountStatus.ACTIVE:
        detail = f": {account.status_detail}" if account.status_detail else ""
        return f"account {account.status.value}{detail}"
    if account.garmin_backoff_until and now < account.garmin_backoff_until:
        return f"Garmin rate limit: backing off until {account.garmin_backoff_until.isoformat()}"
    if account.garmin_refused_until and now < account.garmin_refused_until:
        until = account.garmin_refused_until.isoformat()
        return f"Garmin refuses this network (403): backing off until {until}; {REFUSED_FIX}"
    return ""


def _steps(cycle: _Cycle, activities: Sequence[GarminActivity] | None) -> None:
    """Steps 2-5; what ends the cycle for the whole account is decided here."""
    cycle.webhook_settles = cycle.deps.webhook_settles()
    try:
        # 2. list: Garmin's newest activities, what the ledger says about them, and the
        # ledger's unsettled entries that have scrolled out of the listing.
        listed = _list_garmin(cycle) if activities is None else list(activities)
        todo = _choose(cycle, listed, listing=activities is None)
        # 3. settle what Strava was processing at the end of an earlier cycle.
        _settle_processing(cycle, todo)
        todo = [a for a in todo if not upload_rules.is_settled(cycle.ledger.get(a.activity_id))]
        # 3b. finish on Strava what an earlier cycle left owed; carry Garmin renames.
        _send_owed(cycle)
        if activities is None:  # the lookback window only, never a backfill's history
            _carry_renames(cycle, listed)
        # 4. per activity, after one Strava query per group of nearby candidates.
        _query_strava_for(cycle, todo)
        _sync_activities(cycle, todo)
        # 5. poll once.
        _poll(cycle)
    except StravaAppInactive as exc:
        # The application's state, said once by the adapter: no account is at fault.
        cycle.report.deferred_until = exc.until
        cycle.report.error = str(exc)
        log.info(
            "sync.strava_app_inactive",
            extra={"userId": cycle.user_id, "until": exc.until.isoformat()},
        )
    except RateLimited as exc:
        cycle.report.deferred_until = exc.until
        log.warning(
            "strava.budget_spent", extra={"userId": cycle.user_id, "until": exc.until.isoformat()}
        )
    except GarminRateLimited:
        _garmin_backoff(cycle)
    except GarminNetworkRefused:
        _garmin_refused(cycle)
    except GarminAuthError as exc:
        _needs_human(cycle, AccountStatus.NEEDS_GARMIN_LOGIN, "garmin.auth_failed", str(exc))
    except StravaAuthError as exc:
        _needs_human(cycle, AccountStatus.NEEDS_STRAVA_AUTH, "strava.auth_failed", str(exc))
    except TransientError as exc:
        # An outage (Strava's existence check, Garmin's list): nothing was decided,
        # nothing is lost; the next cycle asks again.
        cycle.report.error = f"{exc}; retried next cycle"
        log.warning("sync.transient", extra={"userId": cycle.user_id, "error": str(exc)})


# -- 2. list ---------------------------------------------------------------------------


def _choose(cycle: _Cycle, listed: list[GarminActivity], *, listing: bool) -> list[GarminActivity]:
    """The candidates, from the ledger (its unsettled entries kept in cycle.ledger);
    none, unread, when the idle mark (domain/idle.py, read before the ledger) says the
    same listing was found idle over the same ledger."""
    mark = cycle.store.ledger_mark(cycle.user_id) if listing else None
    key = idle.listing_key(listed, cycle.config.wants_type)
    if mark is not None and mark.is_idle(key, cycle.deps.clock()):
        return []
    cycle.ledger = cycle.store.get_uploads(cycle.user_id, [a.activity_id for a in listed])
    unsettled = cycle.store.list_unsettled_uploads(cycle.user_id)
    todo = upload_rules.choose_candidates(
        listed,
        cycle.ledger,
        [e for e in unsettled if not e.outcome.settled],  # not the uploads owing a PUT
        wants_type=cycle.config.wants_type,
        now=cycle.deps.clock(),
    )
    if not todo and mark is not None and not cycle.dry_run and not _finish_work(cycle, listed):
        # Kept only if no ledger write came since the mark was read.
        found = idle.LedgerMark(mark.version, key, idle.idle_until(unsettled))
        cycle.store.mark_idle(cycle.user_id, found)
    if todo and not cycle.full_lease:
        _renew_lease(cycle)  # work ahead: the whole lease before the first write
    for entry in unsettled:
        cycle.ledger.setdefault(entry.garmin_activity_id, entry)
    return todo


def _finish_work(cycle: _Cycle, listed: Sequence[GarminActivity]) -> bool:
    """A PUT due or a Garmin rename to carry among what the cycle read: no idle
    finding then (a rename changes the listing's key, so the ledger is read for it)."""
    ledger = dict(cycle.ledger)
    return strava_finish.has_work(
        ledger,
        listed,
        now=cycle.deps.clock(),
        carry_names=cycle.config.finish.carry_names,
        mirror_live=cycle.deps.mirror_live,
    )


def _list_garmin(cycle: _Cycle) -> list[GarminActivity]:
    """The newest `lookback` Garmin activities (one request); a record that is none is
    skipped, and recorded as such when it carries an id the ledger does not know yet."""
    parsed: list[GarminActivity] = []
    records = cycle.garmin().list_activities(start=0, limit=cycle.config.lookback)
    if cycle.account.garmin_backoff_since is not None and not cycle.dry_run:
        # Garmin answered: its back-off spell is over (garmin.backoff_long clears).
        cycle.account = replace(cycle.account, garmin_backoff_since=None)
        cycle.store.put_account(cycle.account)
    if cycle.account.garmin_refusals and not cycle.dry_run:
        # Garmin answered this network: its refusal is over (garmin.network_refused clears).
        cycle.account = replace(
            cycle.account, garmin_refused_until=None, garmin_refused_since=None, garmin_refusals=0
        )
        cycle.store.put_account(cycle.account)
    for record in records:
        try:
            parsed.append(upload_rules.parse_activity(record))
        except InvalidActivity as exc:
            _reject_record(cycle, record, str(exc))
    return parsed


def _reject_record(cycle: _Cycle, record: object, reason: str) -> None:
    log.warning("garmin.bad_record", extra={"userId": cycle.user_id, "reason": reason})
    garmin_id = upload_rules.listing_record_id(record)
    if garmin_id is None:
        return
    cycle.report.note(UploadOutcome.SKIPPED, garmin_id, reason)
    _item(cycle, garmin_id, UploadOutcome.SKIPPED, f"invalid activity record: {reason}")
    if cycle.dry_run:
        return
    if garmin_id not in cycle.store.get_uploads(cycle.user_id, [garmin_id]):
        now = cycle.deps.clock()
        cycle.store.put_upload(
            upload_rules.rejected_record(cycle.user_id, garmin_id, reason, now=now)
        )


# -- 3. settle what is processing --------------------------------------------------------


def _settle_processing(cycle: _Cycle, todo: Sequence[GarminActivity]) -> None:
    """Read the status of earlier cycles' uploads that Strava was still processing."""
    if cycle.dry_run:
        return
    waited_since = cycle.deps.clock() - timedelta(seconds=cycle.config.webhook_wait_s)
    for activity in todo:
        entry = cycle.ledger.get(activity.activity_id)
        if entry is None or entry.outcome is not UploadOutcome.PROCESSING:
            continue
        if entry.upload_id is None:
            continue
        if cycle.webhook_settles and entry.updated_at > waited_since:
            continue  # its `create` is still expected: the mirror worker settles it
        status = cycle.strava().get_upload(entry.upload_id)
        _apply_upload_status(cycle, activity, entry, status)


# -- 4. per activity ---------------------------------------------------------------------


def _query_strava_for(cycle: _Cycle, todo: Sequence[GarminActivity]) -> None:
    """One activity-list query per group of nearby candidates that the mirror does not
    cover (at most one per candidate, usually one for the whole batch)."""
    need = [
        a
        for a in todo
        if not a.manual
        and not upload_rules.mirror_covers(cycle.account, a)
        and upload_rules.needs_existence_check(cycle.ledger.get(a.activity_id))
    ]
    tolerance_s = cycle.config.match_tolerance_s + 1
    for group in upload_rules.group_by_span(need):
        after, before = upload_rules.query_window(
            group[0].start_utc, group[-1].start_utc, tolerance_s
        )
        found = list(_list_strava(cycle, after, before))
        for activity in group:
            cycle.strava_seen[activity.activity_id] = found


def _list_strava(cycle: _Cycle, after: datetime, before: datetime) -> Iterator[StravaActivity]:
    page = 1
    while True:
        batch = cycle.strava().list_activities(
            after=after, before=before, page=page, per_page=upload_rules.QUERY_PAGE
        )
        yield from batch
        if len(batch) < upload_rules.QUERY_PAGE:
            return
        page += 1


def _sync_activities(cycle: _Cycle, todo: Sequence[GarminActivity]) -> None:
    """Oldest first, each under a renewed lease, until stopped or paused."""
    for activity in todo:
        if cycle.deps.stop.is_set():
            log.info("sync.stopping", extra={"userId": cycle.user_id})
            return
        if (paused := pause_reason(cycle.store, cycle.user_id)) is not None:
            cycle.report.skipped_reason = paused  # paused, removed or disconnected
            return
        _renew_lease(cycle)
        _sync_activity(cycle, activity)


def _sync_activity(cycle: _Cycle, activity: GarminActivity) -> None:
    """Already on Strava? Otherwise download the ORIGINAL, check it and upload it."""
    entry = cycle.ledger.get(activity.activity_id)
    if entry is not None and entry.outcome is UploadOutcome.PROCESSING:
        return  # still processing on Strava: a later cycle polls it again
    if activity.manual:
        _settle(cycle, activity, UploadOutcome.SKIPPED, "manual activity: no file")
        return
    existing = _existing_on_strava(cycle, activity)
    if existing is not None:
        strava_id, how = existing
        outcome, detail = upload_rules.settle_known(entry, how)
        _settle(cycle, activity, outcome, detail, strava_id=strava_id)
        return
    if cycle.dry_run:
        cycle.report.note("would_upload", activity.activity_id, activity.name)
        return
    # The work directory first: when the disk is full or the directory unwritable,
    # nothing is downloaded for nothing.
    try:
        with tempfile.TemporaryDirectory(prefix="g2s-") as workdir:
            WRITE_TROUBLE.succeeded("temp")
            original = _download(cycle, activity)
            if original is None:
                return
            try:
                prepared = cycle.deps.files.prepare(original, Path(workdir))
            except FileRejected as exc:
                _rejected(cycle, activity, exc)
                return
            del original  # the extracted file is on disk; the zip's bytes can go
            _upload(cycle, activity, prepared.path, prepared.data_type)
    except OSError as exc:
        # This machine's fault (full, unwritable, over a file size limit), not the
        # run's: failed with a retry time, as often as it takes, never `dead`.
        reason = f"temporary directory unusable ({tempfile.gettempdir()}): {exc.strerror or exc}"
        WRITE_TROUBLE.failed("temp", exc, cycle.deps.clock())  # store.unwritable
        _fail(cycle, activity, _one_more_attempt(cycle, activity), reason, may_give_up=False)


def _existing_on_strava(cycle: _Cycle, activity: GarminActivity) -> tuple[int, str] | None:
    """The Strava activity id that is `activity`, and how it matched; None if none."""
    tolerance_s = cycle.config.match_tolerance_s
    if upload_rules.mirror_covers(cycle.account, activity):
        start, end = upload_rules.query_window(activity.start_utc, activity.start_utc, tolerance_s)
        rows = cycle.store.workouts_starting_between(cycle.user_id, start, end)
        pool = [upload_rules.workout_as_strava_activity(w) for w in rows if not w.is_deleted]
        how_prefix = "mirror"
    else:
        if activity.activity_id not in cycle.strava_seen:
            after, before = upload_rules.query_window(
                activity.start_utc, activity.start_utc, tolerance_s + 1
            )
            cycle.strava_seen[activity.activity_id] = list(_list_strava(cycle, after, before))
        pool = cycle.strava_seen[activity.activity_id]
        how_prefix = "strava"
    match = upload_rules.find_match(activity, pool, tolerance_s=tolerance_s)
    if match is None:
        return None
    return match.strava_activity_id, f"{how_prefix}:{match.how}"


def _download(cycle: _Cycle, activity: GarminActivity) -> bytes | None:
    """The ORIGINAL zip, or None once the ledger says why there is none."""
    try:
        return cycle.garmin().download_original(activity.activity_id)
    except GarminNotFound:
        _settle(cycle, activity, UploadOutcome.SKIPPED, "no original file (manual?)")
    except GarminRefused as exc:
        # The same answer on every attempt: settle now, go on with the others.
        _settle(cycle, activity, UploadOutcome.SKIPPED, f"download refused: {exc}")
    except FileRejected as exc:
        # Over the size limit: stopped while downloading, the same on every attempt.
        _rejected(cycle, activity, exc)
    except TransientError as exc:
        # Garmin's outage, not this run's fault: retried at the capped backoff (up to
        # 6 h apart) however long it lasts, never given up as `dead`.
        _fail(cycle, activity, _one_more_attempt(cycle, activity), exc, may_give_up=False)
    return None


def _rejected(cycle: _Cycle, activity: GarminActivity, exc: Exception) -> None:
    _settle(cycle, activity, UploadOutcome.SKIPPED, f"file rejected: {exc}")
    log.warning(
        "upload.file_rejected",
        extra={"userId": cycle.user_id, "activityId": activity.activity_id, "reason": str(exc)},
    )


def _upload(cycle: _Cycle, activity: GarminActivity, path: Path, data_type: str) -> None:
    """Intent, upload, record: a crash after the upload request is reconciled by the
    next cycle, which finds our external_id on Strava before it uploads again."""
    entry = cycle.ledger.get(activity.activity_id)
    intent = upload_rules.intent(cycle.user_id, activity, entry, now=cycle.deps.clock())
    try:
        # What the PUT after the upload sets, durable with the intent.
        finish = _plan_finish(cycle, activity)
    except TransientError as exc:
        _fail(cycle, activity, _one_more_attempt(cycle, activity), exc, may_give_up=False)
        return
    intent = replace(intent, finish=finish)
    cycle.checkpoint("intent")
    try:
        cycle.store.put_upload(intent)
    except StoreConflict:
        # The store refuses an intent over a settled entry: another runner (one whose
        # lease we outlived) settled this run since we read the ledger.
        log.warning(
            "upload.settled_elsewhere",
            extra={"userId": cycle.user_id, "activityId": activity.activity_id},
        )
        return
    cycle.checkpoint("upload")
    try:
        status = cycle.strava().upload(
            path,
            data_type=data_type,
            external_id=intent.external_id,
            name=activity.name or "Run",
            description=upload_rules.upload_description(
                activity.description, cycle.config.upload_description
            ),
            trainer=activity.indoor,
        )
    except RateLimited:
        # Refused before it was sent (or with a 429): nothing reached Strava.
        cycle.store.put_upload(entry or replace(intent, attempts=intent.attempts - 1))
        raise
    except StravaAuthError:
        raise  # the account needs a human: ends the cycle, not recorded as this run's failure
    except Exception as exc:  # noqa: BLE001 (any failure of one upload is recorded and retried)
        _fail(cycle, activity, intent, exc)
        return
    processing = replace(
        intent, outcome=UploadOutcome.PROCESSING, upload_id=status.upload_id, detail=""
    )
    cycle.checkpoint("record")
    cycle.store.put_upload(processing)
    cycle.ledger[activity.activity_id] = processing
    if finish.gear_unmapped and finish.owed is None:  # no PUT will say it: history does
        event = strava_finish.finish_event(processing, cycle.deps.clock(), "upload.gear_unmapped")
        cycle.store.add_audit(event, retention_days=cycle.config.audit_retention_days)
    if upload_rules.read_upload_status(status).state is upload_rules.UploadState.PROCESSING:
        cycle.awaiting.append((activity, processing))
    else:
        _apply_upload_status(cycle, activity, processing, status)


# -- finishing on Strava (services/strava_finish.py) ----------------------------------------


def _plan_finish(cycle: _Cycle, activity: GarminActivity) -> StravaFinish:
    return strava_finish.plan_finish(
        cycle.garmin(),
        cycle.strava,
        cycle.store,
        cycle.config.finish,
        activity,
        user_id=cycle.user_id,
        uploaded_name=activity.name or "Run",
        now=cycle.deps.clock(),
    )


def _send_one(cycle: _Cycle, entry: LedgerEntry) -> None:
    """The one PUT an upload owes; the ledger records what Strava was told."""
    sent = strava_finish.send_owed(
        cycle.store,
        cycle.strava(),
        entry,
        now=cycle.deps.clock(),
        max_attempts=cycle.config.max_attempts,
        checkpoint=cycle.deps.checkpoint,
        audit=cycle.store,
        retention_days=cycle.config.audit_retention_days,
    )
    cycle.ledger[entry.garmin_activity_id] = sent


def _send_owed(cycle: _Cycle) -> None:
    """The PUTs earlier cycles left owed (a crash, a failure): found among the entries
    this cycle read anyway, so an idle cycle sends nothing."""
    if cycle.dry_run:
        return
    now = cycle.deps.clock()
    for entry in list(cycle.ledger.values()):
        finish = entry.finish
        if entry.outcome is UploadOutcome.UPLOADED and finish is not None and finish.due(now):
            _renew_lease(cycle)
            _send_one(cycle, entry)


def _carry_renames(cycle: _Cycle, listed: Sequence[GarminActivity]) -> None:
    """A listed upload renamed on Garmin since: its name carried to Strava while the
    mirror shows Strava still has the name we set (0 Strava reads); elsewhere skipped
    and said in the cycle's audit."""
    if cycle.dry_run or not cycle.config.finish.carry_names:
        return
    live: list[bool] = []  # asked once, and only when a rename is there to carry

    def mirror_live() -> bool:
        if not live:
            live.append(cycle.deps.mirror_live())
        return live[0]

    for activity in listed:
        entry = cycle.ledger.get(activity.activity_id)
        if entry is None:
            continue
        step, changed = strava_finish.carry_rename(
            cycle.store, entry, activity.name, mirror_live=mirror_live
        )
        if step.action in {"none", "wait"}:
            continue
        cycle.ledger[activity.activity_id] = changed
        what = {
            "carry": "Garmin rename carried to Strava",
            "keep": "renamed on Strava: Strava's name kept",
            "skip": "Garmin rename not carried: the mirror is not live",
        }[step.action]
        _item(cycle, activity.activity_id, f"rename_{step.action}", what, activity)
        if step.action == "carry":
            _renew_lease(cycle)
            _send_one(cycle, changed)


# -- 5. poll once ---------------------------------------------------------------------------


def _poll(cycle: _Cycle) -> None:
    """One wait for the whole batch, then one status read per upload; what is still
    processing then is settled by a later cycle, never by waiting longer."""
    if not cycle.awaiting or cycle.deps.stop.is_set():
        return
    if cycle.webhook_settles:
        # The worker's fetch of each `create` settles them (0 more reads); what gets
        # no event is polled by a cycle after `webhook_wait_s`.
        log.info(
            "upload.awaiting_webhook",
            extra={"userId": cycle.user_id, "uploads": len(cycle.awaiting)},
        )
        return
    cycle.deps.sleep(cycle.config.poll_delay_s)
    _renew_lease(cycle)
    while cycle.awaiting:
        activity, entry = cycle.awaiting[0]
        assert entry.upload_id is not None  # set when the entry became PROCESSING
        cycle.checkpoint("poll")
        status = cycle.strava().get_upload(entry.upload_id)
        _apply_upload_status(cycle, activity, entry, status)
        cycle.awaiting.pop(0)


def _apply_upload_status(
    cycle: _Cycle, activity: GarminActivity, entry: LedgerEntry, status: UploadStatus
) -> None:
    verdict = upload_rules.read_upload_status(status)
    match verdict.state:
        case upload_rules.UploadState.READY:
            _settle(cycle, activity, UploadOutcome.UPLOADED, "", strava_id=verdict.activity_id)
        case upload_rules.UploadState.DUPLICATE:
            _settle(
                cycle,
                activity,
                UploadOutcome.DUPLICATE,
                verdict.message[:300],
                strava_id=verdict.activity_id,
            )
        case upload_rules.UploadState.PROCESSING:
            pass
        case upload_rules.UploadState.ERROR | upload_rules.UploadState.DELETED:
            _fail(cycle, activity, entry, verdict.message)


# -- the ledger ------------------------------------------------------------------------------


def _settle(
    cycle: _Cycle,
    activity: GarminActivity,
    outcome: UploadOutcome,
    detail: str,
    *,
    strava_id: int | None = None,
) -> None:
    entry = cycle.ledger.get(activity.activity_id)
    settled = upload_rules.settled(
        cycle.user_id,
        activity,
        entry,
        outcome,
        detail,
        now=cycle.deps.clock(),
        strava_id=strava_id,
    )
    if settled.finish is not None and outcome is not UploadOutcome.UPLOADED:
        # Gear and muting are for our own upload, not the activity it duplicates.
        settled = replace(settled, finish=replace(settled.finish, owed=None))
    cycle.report.note(outcome, activity.activity_id, detail)
    _item(cycle, activity.activity_id, outcome, detail, activity, stravaActivityId=strava_id)
    if not cycle.dry_run:
        cycle.store.put_upload(settled)
    cycle.ledger[activity.activity_id] = settled
    if settled.finish_owed and not cycle.dry_run:
        _send_one(cycle, settled)  # the activity exists now: its one PUT
    log.info(
        "upload.settled",
        extra={
            "outcome": outcome.value,
            "userId": cycle.user_id,
            "activityId": activity.activity_id,
            "stravaActivityId": strava_id,
            "detail": detail,
        },
    )


def _one_more_attempt(cycle: _Cycle, activity: GarminActivity) -> LedgerEntry:
    """The activity's entry counting one more attempt (one that never reached Strava)."""
    entry = cycle.ledger.get(activity.activity_id)
    base = upload_rules.ledger_entry(
        cycle.user_id, activity, entry, UploadOutcome.FAILED, "", now=cycle.deps.clock()
    )
    return replace(base, attempts=base.attempts + 1)


def _fail(
    cycle: _Cycle,
    activity: GarminActivity,
    entry: LedgerEntry,
    error: object,
    *,
    may_give_up: bool = True,
) -> None:
    message = (f"{type(error).__name__}: {error}" if isinstance(error, Exception) else str(error))[
        :300
    ]
    failed = upload_rules.failed(
        cycle.user_id,
        activity,
        entry,
        message,
        now=cycle.deps.clock(),
        max_attempts=cycle.config.max_attempts,
        may_give_up=may_give_up,
    )
    cycle.store.put_upload(failed)
    cycle.ledger[activity.activity_id] = failed
    cycle.report.note(failed.outcome, activity.activity_id, message)
    if failed.outcome is UploadOutcome.DEAD:
        _item(cycle, activity.activity_id, failed.outcome, message, activity)
        _audit(cycle, "upload.gave_up", {"activityId": activity.activity_id, "error": message})
        log.error(
            "upload.gave_up",
            extra={
                "userId": cycle.user_id,
                "activityId": activity.activity_id,
                "attempts": failed.attempts,
                "error": message,
            },
        )
        return
    _item(cycle, activity.activity_id, failed.outcome, message, activity, attempts=failed.attempts)
    log.warning(
        "upload.failed",
        extra={
            "userId": cycle.user_id,
            "activityId": activity.activity_id,
            "attempts": failed.attempts,
            "error": message,
            "nextRetryAt": failed.next_retry_at.isoformat() if failed.next_retry_at else None,
        },
    )


# -- the lease and the account ------------------------------------------------------------------


def _renew_lease(cycle: _Cycle) -> None:
    if cycle.dry_run:
        return
    renewed = cycle.store.acquire_lease(
        cycle.user_id, cycle.owner, now=cycle.deps.clock(), ttl_seconds=cycle.config.lease_ttl_s
    )
    if not renewed:
        cycle.report.skipped_reason = LEASE_LOST
        raise _StopCycle
    cycle.full_lease = True


def _garmin_backoff(cycle: _Cycle) -> None:
    # Bounded here too: no setting may turn a 429 into an OverflowError.
    backoff_s = min(cycle.config.garmin_backoff_s, _MAX_GARMIN_BACKOFF_S)
    now = cycle.deps.clock()
    until = now + timedelta(seconds=backoff_s)
    cycle.report.ok = False
    cycle.report.error = f"Garmin answered 429; no Garmin request before {until.isoformat()}"
    if not cycle.dry_run:
        since = cycle.account.garmin_backoff_since or now  # no answer since: the same spell
        cycle.account = replace(
            cycle.account, garmin_backoff_until=until, garmin_backoff_since=since
        )
        cycle.store.put_account(cycle.account)
        _audit(cycle, "garmin.rate_limited", {"until": until.isoformat()})
    log.error("garmin.rate_limited", extra={"userId": cycle.user_id, "until": until.isoformat()})


def refusal_wait(refusals: int) -> timedelta:
    """The wait after the `refusals`-th 403 in a row: 1 h, 2 h, 4 h ... at most 24 h."""
    return min(REFUSAL_WAIT_MAX, REFUSAL_WAIT_FIRST * (1 << min(max(refusals - 1, 0), 8)))


def _garmin_refused(cycle: _Cycle) -> None:
    """A 403: Garmin refuses this network or client, not the tokens (no needs-login)."""
    now = cycle.deps.clock()
    refusals = cycle.account.garmin_refusals + 1
    until = now + refusal_wait(refusals)
    cycle.report.ok = False
    cycle.report.error = (
        f"Garmin answered 403 (it refuses this network or client); no Garmin request "
        f"before {until.isoformat()}; {REFUSED_FIX}"
    )
    if not cycle.dry_run:
        cycle.account = replace(
            cycle.account,
            garmin_refused_until=until,
            garmin_refused_since=cycle.account.garmin_refused_since or now,
            garmin_refusals=refusals,
        )
        cycle.store.put_account(cycle.account)
        _audit(cycle, "garmin.network_refused", {"until": until.isoformat()})
    log.error(
        "garmin.network_refused",
        extra={"userId": cycle.user_id, "until": until.isoformat(), "refusals": refusals},
    )


def _needs_human(cycle: _Cycle, status: AccountStatus, kind: str, detail: str) -> None:
    cycle.report.ok = False
    cycle.report.error = detail
    hint = (
        "run `garmin2strava garmin login`"
        if status is AccountStatus.NEEDS_GARMIN_LOGIN
        else "run `garmin2strava get-token`"
    )
    if not cycle.dry_run:
        cycle.account = replace(cycle.account, status=status, status_detail=f"{detail}; {hint}")
        cycle.store.put_account(cycle.account)
        _audit(cycle, kind, {"error": detail})
    log.error(kind, extra={"userId": cycle.user_id, "error": detail, "hint": hint})


# -- 6. record the cycle ---------------------------------------------------------------------


def _record_cycle(cycle: _Cycle, started: float, *, audit: bool = True) -> None:
    report = cycle.report
    duration_ms = round((time.monotonic() - started) * 1000)
    summary = {k: int(v) for k, v in report.outcomes.items()}
    fresh = cycle.store.get_account(cycle.user_id) or cycle.account
    cycle.store.put_account(
        replace(
            fresh,
            last_cycle_at=cycle.deps.clock(),
            last_cycle_ok=report.ok,
            last_cycle_summary=summary,
        )
    )
    log_fields = {
        "userId": cycle.user_id,
        "durationMs": duration_ms,
        "ok": report.ok,
        "outcomes": summary,
        "deferredUntil": report.deferred_until.isoformat() if report.deferred_until else None,
    }
    if not audit:  # idle: `history` shows "idle since" its newest event instead
        log.info("sync.cycle", extra=log_fields)
        return
    # The cycle's own audit event: what `garmin2strava history` and the status page
    # read back.
    items = cycle.items[:MAX_CYCLE_ITEMS]
    detail: dict[str, object] = {
        "ok": report.ok,
        "durationMs": duration_ms,
        "outcomes": summary,
        "error": report.error,
        "stopped": report.skipped_reason,
        "deferredUntil": report.deferred_until.isoformat() if report.deferred_until else None,
        "items": items,
    }
    if len(cycle.items) > len(items):
        detail["itemsOmitted"] = len(cycle.items) - len(items)
    _audit(cycle, "sync.cycle", detail)
    log.info("sync.cycle", extra=log_fields)


def _item(
    cycle: _Cycle,
    garmin_id: int,
    outcome: str,
    detail: str,
    activity: GarminActivity | None = None,
    **more: object,
) -> None:
    cycle.items.append(
        {
            "garminActivityId": garmin_id,
            "outcome": outcome,
            "name": activity.name if activity else "",
            "startUtc": activity.start_utc.isoformat() if activity else None,
            "detail": detail[:300],
            **more,
        }
    )


def _audit(cycle: _Cycle, kind: str, detail: dict[str, object]) -> None:
    cycle.store.add_audit(
        AuditEvent(
            user_id=cycle.user_id,
            at=cycle.deps.clock(),
            kind=kind,
            event_id=uuid.uuid4().hex,
            detail=dict(detail),
        ),
        retention_days=cycle.config.audit_retention_days,
    )
