"""The mirror's worker: settle the queued webhook events, keep `WORKOUT#STRAVA#{id}` current.

`process_events` claims a batch of groups (a group: the ready events about one
object) and settles each: the kind that decides the group (`group_kind`) picks its
handler from `HANDLERS`, one function per kind, and the handler returns an `Outcome`
(applied, deferred until, permanent failure, dropped with a reason) that
`process_events` hands to the queue, the counters and the log. One Strava fetch per
activity at most; failures are retried with backoff and dead-lettered after the last
attempt. Events of athletes we do not know (the container's receiver drops most
before the queue; the Lambda webhook cannot), or of a disconnected account, are
dropped (counted, never dead letters). A deauthorization is obeyed only once Strava
refused a token refresh: then the athlete's tokens, mirrored activities and audit
trail are deleted (Strava's API Agreement), the upload ledger is kept so a reconnect
never uploads twice, and the account is disconnected. A Strava outage (5xx, timeout,
refused connection) is waited out however long it lasts, never dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, assert_never

from garmin2strava.domain import upload_rules
from garmin2strava.domain.models import AccountStatus, AuditEvent, LedgerEntry, Workout
from garmin2strava.domain.webhook import QueuedEvent, WebhookEvent
from garmin2strava.domain.workouts import apply_update, normalize_activity, soft_delete
from garmin2strava.errors import (
    InvalidActivity,
    RateLimited,
    StravaAuthError,
    StravaNotFound,
    TransientError,
)
from garmin2strava.ports import (
    AccessCheck,
    Accounts,
    AppState,
    AuditLog,
    EventQueue,
    StravaActivityUpdates,
    StravaReads,
    StravaTokenStore,
    StreamStore,
    WorkoutMirror,
)
from garmin2strava.services.mirror_backfill import cursor_key
from garmin2strava.services.observability import (
    LogThrottle,
    MirrorStats,
    event_log_fields,
    ms_since,
)
from garmin2strava.services.strava_finish import send_owed
from garmin2strava.services.streams import take_after_fetch

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "HANDLERS",
    "OUTAGE_MAX_WAIT_SECONDS",
    "Applied",
    "Deferred",
    "Dropped",
    "MirrorCounts",
    "MirrorStore",
    "Outcome",
    "Permanent",
    "event_kind",
    "group_kind",
    "process_events",
    "work_until_stopped",
]

# The mirror's log lines keep the logger name they had before the module was split:
# the JSON lines' "logger" field is what operators filter on.
log = logging.getLogger("garmin2strava.services.mirror")

BACKOFF_BASE_SECONDS = 1.0  # 1 s, 2 s, 4 s, ...
DEFAULT_MAX_ATTEMPTS = 3
# Failed PUTs of an upload's finish before it is given up (G2S_MAX_ATTEMPTS' default;
# the sync cycle retries what the worker left with the setting itself).
DEFAULT_FINISH_ATTEMPTS = 5
# After its last counted attempt an event that meets a Strava outage waits half its
# age again (x1.5 each time), at most this long, and is never dead-lettered.
OUTAGE_MAX_WAIT_SECONDS = 900.0


class OurUploads(Protocol):
    """The two ledger operations of a `create` that shows our upload as an activity."""

    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]: ...
    def put_upload(self, entry: LedgerEntry) -> None: ...


class MirrorStrava(StravaReads, StravaActivityUpdates, Protocol):
    """What the worker asks of one athlete's Strava: its reads, and the PUT that
    finishes an upload of ours its `create` settles."""


class MirrorStore(
    Accounts,
    StravaTokenStore,
    AuditLog,
    WorkoutMirror,
    StreamStore,
    AppState,
    OurUploads,
    Protocol,
):
    """What the mirror keeps: accounts and their athletes, the Strava tokens a
    deauthorization deletes, the workouts and their streams, the subscription id; and
    the upload ledger entries a `create` of our own upload settles."""


# -- what a handler returns -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Applied:
    """The group's events took effect (or carried nothing to keep); `requests` Strava
    requests were made for them."""

    requests: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """No Strava request before `until` (the budget is spent, the application is
    inactive, or a fetch of this batch met an outage): the group waits, unsent, and no
    attempt is counted."""

    until: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Permanent:
    """Retrying cannot help (a refused token, an activity we cannot read): the group
    goes to the dead letters now, with `error`."""

    error: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """The group is settled without effect; `reason` names why (and its counter)."""

    reason: str


Outcome = Applied | Deferred | Permanent | Dropped


@dataclass(slots=True)
class MirrorCounts:
    """What one `process_events` call did, in events (fetches in requests)."""

    processed: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    dropped: int = 0  # unknown athlete or disconnected account: settled, not applied
    fetches: int = 0

    @property
    def claimed(self) -> int:
        return self.processed + self.retried + self.dead + self.deferred + self.dropped


@dataclass(frozen=True, slots=True)
class _Deps:
    """What every step of one `process_events` call needs."""

    store: MirrorStore
    strava_for: Callable[[str], MirrorStrava]
    now: datetime
    retention_days: int
    stats: MirrorStats
    stream_types: tuple[str, ...] = ()  # G2S_MIRROR_STREAMS: read after a create's fetch


@dataclass(frozen=True, slots=True)
class _ObjectEvents:
    """What a handler is given: one group's events (all about one object), the account
    they belong to, and, when a fetch of this batch met the budget or an outage, until
    when no fetch may be made."""

    user_id: str
    events: Sequence[WebhookEvent]
    deferred_until: datetime | None

    @property
    def object_id(self) -> int:
        return self.events[0].object_id

    @property
    def newest(self) -> datetime:
        return max(e.happened_at for e in self.events)


# Throttles the worker's "dropped" lines: a flood of unknown athletes logs once a minute.
_DROP_LOG = LogThrottle()


def process_events(
    queue: EventQueue,
    store: MirrorStore,
    strava_for: Callable[[str], MirrorStrava],
    *,
    now: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    limit: int = 50,
    visibility_seconds: float = 60.0,
    stats: MirrorStats | None = None,
    audit_retention_days: int = 7,
    stream_types: Sequence[str] = (),
) -> MirrorCounts:
    """Claim one batch of event groups and settle every one of them."""
    counts = MirrorCounts()
    stats = stats or MirrorStats()
    deps = _Deps(store, strava_for, now, audit_retention_days, stats, tuple(stream_types))
    deferred_until: datetime | None = None
    for group in queue.claim(now=now, limit=limit, visibility_seconds=visibility_seconds):
        fields = event_log_fields(group[0].event) | {"events": len(group)}
        started = time.perf_counter()
        try:
            outcome = _process_group(deps, group, deferred_until)
        except TransientError as exc:
            retry_at = _wait_out_outage(queue, group, exc, now=now, max_attempts=max_attempts)
            # The groups behind it would meet the same outage: they wait with it, unsent.
            deferred_until = max(deferred_until or retry_at, retry_at)
            counts.retried += len(group)
            stats.add("events_failed", len(group))
            continue
        except Exception as exc:  # noqa: BLE001 (any failure is retried, then dead-lettered)
            _retry_or_bury(
                deps, queue, group, exc, counts=counts, fields=fields, max_attempts=max_attempts
            )
            continue
        if isinstance(outcome, Deferred):
            deferred_until = outcome.until  # the groups behind it fetch nothing either
        _settle(deps, queue, group, outcome, counts=counts, fields=fields, started=started)
    return counts


def _settle(
    deps: _Deps,
    queue: EventQueue,
    group: Sequence[QueuedEvent],
    outcome: Outcome,
    *,
    counts: MirrorCounts,
    fields: dict[str, Any],
    started: float,
) -> None:
    """Tell the queue, the counters and the log what became of one group."""
    n = len(group)
    match outcome:
        case Applied(requests=requests):
            queue.complete(group, now=deps.now)
            counts.processed += n
            counts.fetches += requests
            deps.stats.add("events_processed", n)
            deps.stats.add("strava_fetches", requests)
            log.info("mirror.processed", extra=fields | {"durationMs": ms_since(started)})
        case Deferred(until=until, reason=reason):
            queue.release(group, available_at=until)
            counts.deferred += n
            deps.stats.add("events_deferred", n)
            log.info(
                "mirror.deferred", extra=fields | {"until": until.isoformat(), "reason": reason}
            )
        case Dropped(reason=reason):
            queue.complete(group, now=deps.now)
            counts.dropped += n
            deps.stats.add(f"events_dropped_{reason}", n)
            suppressed = _DROP_LOG.due(reason)
            if suppressed is not None:
                log.warning(
                    "mirror.event_dropped",
                    extra=fields | {"reason": reason, "suppressedSinceLast": suppressed},
                )
        case Permanent(error=error):
            _bury(deps, queue, group, error)
            counts.dead += n
            deps.stats.add("events_dead", n)
        case _:
            assert_never(outcome)


def _retry_or_bury(
    deps: _Deps,
    queue: EventQueue,
    group: Sequence[QueuedEvent],
    exc: Exception,
    *,
    counts: MirrorCounts,
    fields: dict[str, Any],
    max_attempts: int,
) -> None:
    """A failure that is not an outage: retried at 1 s, 2 s, 4 s ..., then dead."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    attempts = max(r.attempts for r in group) + 1
    deps.stats.add("events_failed", len(group))
    if attempts >= max_attempts:
        _bury(deps, queue, group, error)
        counts.dead += len(group)
        deps.stats.add("events_dead", len(group))
        return
    delay = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
    queue.fail(group, retry_at=deps.now + timedelta(seconds=delay), error=error)
    counts.retried += len(group)
    log.warning(
        "mirror.retry_scheduled",
        extra=fields | {"attempt": attempts, "error": error, "delaySeconds": delay},
    )


def _wait_out_outage(
    queue: EventQueue,
    group: Sequence[QueuedEvent],
    exc: TransientError,
    *,
    now: datetime,
    max_attempts: int,
) -> datetime:
    """Schedule the group's next try after a Strava outage met it; returns when.

    Before the last attempt: a counted failure, 1 s, 2 s, 4 s, ... as any other. From
    then on: put back without counting (in SQS a delayed copy, which SQS's redrive
    never dead-letters), after half the event's age, at most OUTAGE_MAX_WAIT_SECONDS.
    So an outage of an hour costs an event about a dozen tries and loses nothing."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    attempts = max(r.attempts for r in group) + 1
    fields = event_log_fields(group[0].event) | {"attempt": attempts, "error": error}
    if attempts < max_attempts:
        delay = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
        queue.fail(group, retry_at=now + timedelta(seconds=delay), error=error)
        log.warning("mirror.retry_scheduled", extra=fields | {"delaySeconds": delay})
        return now + timedelta(seconds=delay)
    age = (now - min(r.enqueued_at for r in group)).total_seconds()
    last_backoff = BACKOFF_BASE_SECONDS * 2 ** min(max_attempts - 1, 30)
    delay = min(OUTAGE_MAX_WAIT_SECONDS, max(last_backoff, age / 2))
    queue.release(group, available_at=now + timedelta(seconds=delay))
    log.warning("mirror.outage_wait", extra=fields | {"delaySeconds": delay, "ageSeconds": age})
    return now + timedelta(seconds=delay)


def work_until_stopped(
    queue: EventQueue,
    store: MirrorStore,
    strava_for: Callable[[str], MirrorStrava],
    *,
    stop: threading.Event,
    clock: Callable[[], datetime],
    stats: MirrorStats,
    idle_seconds: float = 0.5,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    stream_types: Sequence[str] = (),
) -> None:
    """Process events until `stop` is set; sleep only while the queue has nothing ready."""
    while not stop.is_set():
        try:
            counts = process_events(
                queue,
                store,
                strava_for,
                now=clock(),
                max_attempts=max_attempts,
                stats=stats,
                stream_types=stream_types,
            )
        except Exception as exc:  # the worker survives a broken store; /healthz says so
            stats.beat(clock(), f"{type(exc).__name__}: {exc}"[:200])
            log.exception("mirror.worker_error")
            stop.wait(idle_seconds * 4)
            continue
        stats.beat(clock(), None)
        if counts.processed + counts.retried + counts.dead + counts.dropped == 0:
            stop.wait(idle_seconds)


# -- one group: every ready event about one object ------------------------------------
def _process_group(
    deps: _Deps, group: Sequence[QueuedEvent], deferred_until: datetime | None
) -> Outcome:
    """Whose the group's events are, then the handler of the kind that decides them."""
    events = [record.event for record in group]
    user_id = deps.store.user_for_athlete(events[0].owner_id)
    if user_id is None:
        return Dropped("unknown_athlete")
    account = deps.store.get_account(user_id)
    if account is not None and account.status is AccountStatus.DISCONNECTED:
        return Dropped("disconnected")  # no Strava request for it until it reconnects
    handler = HANDLERS.get(group_kind(events))
    if handler is None:  # parse_event admits no such event: a kind without a handler
        return Dropped("unknown_kind")
    return handler(deps, _ObjectEvents(user_id, events, deferred_until))


def event_kind(event: WebhookEvent) -> str:
    """The key of one event in HANDLERS: an activity's aspect ("create", "update",
    "delete"), "deauthorize", or "athlete" for any other athlete event."""
    if event.object_type == "athlete":
        return "deauthorize" if event.is_deauthorization else "athlete"
    return event.aspect_type


def group_kind(events: Sequence[WebhookEvent]) -> str:
    """The kind that decides a group (its events are all about one object): the first
    kind of HANDLERS present among its events; with none of them, its first event's
    kind (which has no handler)."""
    kinds = {event_kind(e) for e in events}
    return next((kind for kind in HANDLERS if kind in kinds), event_kind(events[0]))


def _on_create(deps: _Deps, group: _ObjectEvents) -> Outcome:
    """A create costs one fetch, unless the stored row is newer than the create (a
    fetch made after it already reflects it): then only the group's updates apply."""
    stored = deps.store.get_workout(group.user_id, group.object_id)
    created = max(e.happened_at for e in group.events if e.aspect_type == "create")
    if stored is None or stored.updated_at < created:
        return _fetch_and_store(deps, group, stored)
    return _apply_updates(deps, stored, group.events)


def _on_update(deps: _Deps, group: _ObjectEvents) -> Outcome:
    """Updates carry title, type and visibility themselves: no request, unless the
    activity is not mirrored yet (then one fetch brings it as it is now)."""
    stored = deps.store.get_workout(group.user_id, group.object_id)
    if stored is None:
        return _fetch_and_store(deps, group, stored)
    return _apply_updates(deps, stored, group.events)


def _on_delete(deps: _Deps, group: _ObjectEvents) -> Outcome:
    """A soft delete, no request. Strava never reuses an id: after a delete nothing
    else in the group matters."""
    stored = deps.store.get_workout(group.user_id, group.object_id)
    if stored is not None:
        deps.store.upsert_workout(soft_delete(stored, group.newest))
    return Applied(0)


def _on_deauthorize(deps: _Deps, group: _ObjectEvents) -> Outcome:
    """A deauthorization is obeyed only when Strava confirms it: one token refresh,
    which Strava refuses once the athlete revoked access."""
    user_id = group.user_id
    deauth = [e for e in group.events if e.is_deauthorization][-1]
    fields = event_log_fields(deauth) | {"userId": user_id}
    strava = deps.strava_for(user_id)
    if deps.store.get_strava_tokens(user_id) is None or not isinstance(strava, AccessCheck):
        # Nothing to ask Strava with: nothing proves the event, so it changes nothing.
        deps.stats.add("deauthorizations_unverifiable")
        log.warning("mirror.deauthorization_unverifiable", extra=fields)
        return Applied(0)
    if not strava.access_revoked():
        deps.stats.add("deauthorizations_refuted")
        _audit(deps, user_id, "strava.deauthorization_refuted", {"athleteId": deauth.owner_id})
        log.warning("mirror.deauthorization_refuted", extra=fields)
        return Applied(1)
    _forget_athlete(deps, user_id, deauth.owner_id)
    log.warning("mirror.deauthorized", extra=fields)
    return Applied(1)


def _on_other_athlete_event(_deps: _Deps, _group: _ObjectEvents) -> Outcome:
    """Athlete events other than a deauthorization carry nothing the mirror keeps."""
    return Applied(0)


# One handler per kind, in precedence order: in a group, the first kind present
# decides. A delete outweighs everything (Strava never reuses an id), a create its
# updates (its fetch brings them).
HANDLERS: Mapping[str, Callable[[_Deps, _ObjectEvents], Outcome]] = {
    "delete": _on_delete,
    "create": _on_create,
    "update": _on_update,
    "deauthorize": _on_deauthorize,
    "athlete": _on_other_athlete_event,
}


def _fetch_and_store(deps: _Deps, group: _ObjectEvents, stored: Workout | None) -> Outcome:
    """One fetch of the activity as Strava has it now, stamped with the group's newest
    event (the fetch comes after all of them); Strava's 404 soft-deletes our row."""
    if group.deferred_until is not None:  # a fetch of this batch already hit the limit
        return Deferred(group.deferred_until)
    user_id, activity_id = group.user_id, group.object_id
    try:
        raw = deps.strava_for(user_id).get_activity(activity_id)
    except RateLimited as exc:  # StravaAppInactive too: no account is at fault
        return Deferred(exc.until, str(exc))
    except StravaNotFound:
        if stored is not None:
            deps.store.upsert_workout(soft_delete(stored, group.newest))
        return Applied(1)
    except StravaAuthError as exc:
        return _token_refused(deps, group, exc)
    try:
        workout = normalize_activity(raw, user_id=user_id, updated_at=group.newest)
    except InvalidActivity as exc:
        return Permanent(f"activity {activity_id}: {exc}")
    deps.store.upsert_workout(workout)
    puts = _settle_our_upload(deps, user_id, workout)
    # Streams right after the fetch that brought the activity in: at most one read,
    # never again once recorded; marked pending when the budget is short.
    streams = take_after_fetch(
        deps.store, deps.strava_for(user_id), workout, deps.stream_types, now=deps.now
    )
    return Applied(1 + puts + streams.reads)


def _token_refused(deps: _Deps, group: _ObjectEvents, exc: StravaAuthError) -> Outcome:
    """Strava refused the account's token while fetching: audited, then one more token
    refresh asks Strava why. An athlete who revoked access (their deauthorization event
    dropped, or not here yet) is obeyed as that event would have been: their Strava
    data goes and the group is dropped, for `get-token` and `mirror backfill` bring
    it back. Otherwise (the application's credentials, say) the group is dead at once:
    every retry would meet the same refusal."""
    user_id, activity_id = group.user_id, group.object_id
    detail = {"activityId": activity_id, "error": str(exc)[:200]}
    _audit(deps, user_id, "strava.auth_failed", detail)
    log.warning("mirror.strava_auth_failed", extra={"userId": user_id, **detail})
    strava = deps.strava_for(user_id)
    if isinstance(strava, AccessCheck):
        try:
            revoked = strava.access_revoked()
        except StravaAuthError:
            revoked = False
        if revoked:
            _forget_athlete(deps, user_id, group.events[0].owner_id)
            log.warning("mirror.deauthorized", extra={"userId": user_id, "by": "token_refused"})
            return Dropped("deauthorized")
    return Permanent(f"Strava refused the token of {user_id}")


def _apply_updates(deps: _Deps, stored: Workout, events: Sequence[WebhookEvent]) -> Applied:
    """apply_update keeps each field's newest change, whatever order the events come
    in; the store keeps whichever row is newest."""
    workout = stored
    for event in events:
        if event.aspect_type == "update":
            workout = apply_update(workout, event.updates, event.happened_at)
    if workout is not stored:
        deps.store.upsert_workout(workout)
    return Applied(0)


def _forget_athlete(deps: _Deps, user_id: str, athlete_id: int) -> None:
    """Strava's API Agreement: the athlete revoked access, so their Strava data goes.
    Tokens first (no request can follow), then the mirror and the audit trail; the
    upload ledger stays (Garmin ids and the ids of what we uploaded), so a reconnect
    never uploads an activity twice. Counted in `deauthorizations`."""
    deps.store.delete_strava_tokens(user_id)
    removed = deps.store.forget_strava_data(user_id)
    deps.store.put_app_state(cursor_key(user_id), {})  # a later backfill starts afresh
    account = deps.store.get_account(user_id)
    if account is not None:
        deps.store.put_account(
            replace(
                account,
                status=AccountStatus.DISCONNECTED,
                status_detail=(
                    "the athlete revoked garmin2strava's access on Strava; their mirrored "
                    "Strava data was deleted. Run get-token to reconnect"
                ),
                mirror_covers_since=None,  # the mirror is empty now
            )
        )
    _audit(deps, user_id, "strava.deauthorized", {"athleteId": athlete_id, "itemsDeleted": removed})
    deps.stats.add("deauthorizations")


def _settle_our_upload(deps: _Deps, user_id: str, workout: Workout) -> int:
    """An activity made from our upload (our external_id) settles its ledger entry: the
    uploader then needs no status poll, and this fetch was to be made anyway. What the
    upload owes Strava (gear, muting) is sent now, in one PUT; the requests made (0 or 1)
    are returned."""
    garmin_id = upload_rules.garmin_id_of(workout.external_id)
    if garmin_id is None:
        return 0
    entry = deps.store.get_uploads(user_id, [garmin_id]).get(garmin_id)
    settled = (
        None
        if entry is None
        else upload_rules.settled_by_webhook(entry, workout.activity_id, now=deps.now)
    )
    if settled is None:
        return 0
    deps.store.put_upload(settled)
    deps.stats.add("uploads_settled_by_webhook")
    log.info(
        "upload.settled_by_webhook",
        extra={"userId": user_id, "activityId": garmin_id, "stravaId": workout.activity_id},
    )
    if not settled.finish_owed:
        return 0
    try:
        send_owed(
            deps.store,
            deps.strava_for(user_id),
            settled,
            now=deps.now,
            max_attempts=DEFAULT_FINISH_ATTEMPTS,
            audit=deps.store,
            retention_days=deps.retention_days,
        )
    except (RateLimited, StravaAuthError) as exc:  # StravaAppInactive is a RateLimited
        # Still owed, in the uploader's index: a later sync cycle sends it.
        log.info("upload.finish_left_owed", extra={"userId": user_id, "error": str(exc)})
        return 0
    return 1


def _bury(deps: _Deps, queue: EventQueue, group: Sequence[QueuedEvent], error: str) -> None:
    queue.dead_letter(group, now=deps.now, error=error)
    event = group[0].event
    log.error("mirror.dead_letter", extra=event_log_fields(event) | {"error": error})
    user_id = deps.store.user_for_athlete(event.owner_id)
    if user_id is not None:
        detail = {
            "queueIds": [r.queue_id for r in group],
            "objectType": event.object_type,
            "objectId": event.object_id,
            "error": error,
        }
        _audit(deps, user_id, "mirror.dead_letter", detail)


def _audit(deps: _Deps, user_id: str, kind: str, detail: dict[str, Any]) -> None:
    event = AuditEvent(
        user_id=user_id, at=deps.now, kind=kind, event_id=uuid.uuid4().hex, detail=detail
    )
    deps.store.add_audit(event, retention_days=deps.retention_days)
