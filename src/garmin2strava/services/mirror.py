"""The mirror: take Strava's webhook events, keep `WORKOUT#STRAVA#{id}` rows current.

`receive_webhook` runs inside Strava's 2-second budget: validate, enqueue, answer. It
imports nothing heavy and never calls Strava. `process_events` is the worker: one
claim of grouped events, one Strava fetch per activity at most, retries with backoff,
dead letters after the last attempt. A Strava outage (5xx, timeout, refused
connection) is waited out however long it lasts, never dead-lettered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from garmin2strava.domain.models import AccountStatus, AuditEvent, Workout
from garmin2strava.domain.webhook import (
    BadEvent,
    ForeignSubscription,
    QueuedEvent,
    WebhookEvent,
    check_handshake,
    parse_event,
)
from garmin2strava.domain.workouts import BadActivity, apply_update, normalize_activity, soft_delete
from garmin2strava.errors import RateLimited, StravaAuthError, StravaNotFound, TransientError
from garmin2strava.ports import EventQueue, EventSink, Store, StravaPort

__all__ = [
    "MirrorCounts",
    "MirrorStats",
    "WebhookAnswer",
    "WebhookReceiver",
    "process_events",
    "run_worker",
]

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0  # 1 s, 2 s, 4 s, ...
DEFAULT_MAX_ATTEMPTS = 3
# After its last counted attempt an event that meets a Strava outage waits half its
# age again (x1.5 each time), at most this long, and is never dead-lettered.
OUTAGE_MAX_WAIT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What the HTTP entrypoint sends back; nothing in `body` comes from a secret."""

    status: int
    body: Mapping[str, Any]


class MirrorStats:
    """Counters for /metrics and the worker's heartbeat for /healthz. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.worker_last_run: datetime | None = None
        self.worker_last_error: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def beat(self, at: datetime, error: str | None) -> None:
        with self._lock:
            self.worker_last_run = at
            self.worker_last_error = error


class WebhookReceiver:
    """The two webhook requests: the subscription handshake and event delivery."""

    def __init__(
        self,
        queue: EventSink,
        *,
        verify_token: str | None,
        subscription_id: int | None,
        stats: MirrorStats,
        clock: Callable[[], datetime],
    ) -> None:
        self._queue = queue
        self._verify_token = verify_token
        self._subscription_id = subscription_id
        self._stats = stats
        self._clock = clock

    def handshake(self, params: Mapping[str, str]) -> WebhookAnswer:
        challenge = check_handshake(params, self._verify_token)
        if challenge is None:
            log.warning("webhook.handshake_refused", extra={"hubMode": params.get("hub.mode")})
            return WebhookAnswer(403, {"error": "forbidden"})
        log.info("webhook.handshake_ok")
        return WebhookAnswer(200, {"hub.challenge": challenge})

    def warm(self) -> None:
        """Run the request path once without queueing, before the first real event.

        Called from the HTTP app's startup in the thread pool: the pool's first use
        imports anyio's backend and starts a thread (about 140 ms on this machine,
        measured), which would otherwise land on the first POST and on every event
        queued behind it."""
        sample = {
            "aspect_type": "create",
            "event_time": 1,
            "object_id": 1,
            "object_type": "activity",
            "owner_id": 1,
            "subscription_id": self._subscription_id or 1,
            "updates": {},
        }
        event = parse_event(json.dumps(sample).encode(), subscription_id=self._subscription_id)
        _event_fields(event)

    def receive(self, body: bytes) -> WebhookAnswer:
        started = time.perf_counter()
        try:
            event = parse_event(body, subscription_id=self._subscription_id)
        except BadEvent as exc:
            self._stats.add("events_rejected_bad")
            log.warning("webhook.event_rejected", extra={"reason": exc.reason})
            return WebhookAnswer(400, {"error": exc.reason})
        except ForeignSubscription as exc:
            self._stats.add("events_rejected_foreign")
            log.warning(
                "webhook.foreign_subscription", extra={"subscriptionId": exc.subscription_id}
            )
            return WebhookAnswer(403, {"error": "unknown subscription"})
        new = self._queue.enqueue(event, now=self._clock())
        self._stats.add("events_received" if new else "events_duplicate")
        log.info(
            "webhook.event_queued" if new else "webhook.event_duplicate",
            extra=_event_fields(event) | {"durationMs": _ms_since(started)},
        )
        return WebhookAnswer(200, {"status": "queued" if new else "duplicate"})


@dataclass(slots=True)
class MirrorCounts:
    """What one `process_events` call did, in events (fetches in requests)."""

    processed: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    fetches: int = 0

    @property
    def claimed(self) -> int:
        return self.processed + self.retried + self.dead + self.deferred


@dataclass(frozen=True, slots=True)
class _Run:
    """What every step of one `process_events` call needs."""

    store: Store
    strava_for: Callable[[str], StravaPort]
    now: datetime
    retention_days: int


class _Deferred(Exception):
    """Internal: no Strava request before `until` (the budget is spent, the
    application is inactive, or a fetch of this batch met an outage)."""

    def __init__(self, until: datetime, reason: str = "") -> None:
        self.until = until
        self.reason = reason
        super().__init__(until.isoformat())


class _Permanent(Exception):
    """Internal: retrying cannot help (unknown athlete, revoked token, bad JSON)."""


def process_events(
    queue: EventQueue,
    store: Store,
    strava_for: Callable[[str], StravaPort],
    *,
    now: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    limit: int = 50,
    visibility_seconds: float = 60.0,
    stats: MirrorStats | None = None,
    audit_retention_days: int = 7,
) -> MirrorCounts:
    """Claim one batch of event groups and settle every one of them."""
    counts = MirrorCounts()
    stats = stats or MirrorStats()
    run = _Run(store, strava_for, now, audit_retention_days)
    deferred_until: datetime | None = None
    for group in queue.claim(now=now, limit=limit, visibility_seconds=visibility_seconds):
        first = group[0].event
        fields = _event_fields(first) | {"events": len(group)}
        started = time.perf_counter()
        try:
            fetched = _process_group(run, group, deferred_until)
        except _Deferred as exc:
            deferred_until = exc.until
            queue.release(group, available_at=exc.until)
            counts.deferred += len(group)
            stats.add("events_deferred", len(group))
            log.info(
                "mirror.deferred",
                extra=fields | {"until": exc.until.isoformat(), "reason": exc.reason},
            )
        except _Permanent as exc:
            _bury(run, queue, group, str(exc))
            counts.dead += len(group)
            stats.add("events_dead", len(group))
        except TransientError as exc:
            retry_at = _wait_out_outage(queue, group, exc, now=now, max_attempts=max_attempts)
            # The groups behind it would meet the same outage: they wait with it, unsent.
            deferred_until = max(deferred_until or retry_at, retry_at)
            counts.retried += len(group)
            stats.add("events_failed", len(group))
        except Exception as exc:  # noqa: BLE001 (any failure is retried, then dead-lettered)
            error = f"{type(exc).__name__}: {exc}"[:500]
            attempts = max(r.attempts for r in group) + 1
            stats.add("events_failed", len(group))
            if attempts >= max_attempts:
                _bury(run, queue, group, error)
                counts.dead += len(group)
                stats.add("events_dead", len(group))
            else:
                delay = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
                queue.fail(group, retry_at=now + timedelta(seconds=delay), error=error)
                counts.retried += len(group)
                log.warning(
                    "mirror.retry_scheduled",
                    extra=fields | {"attempt": attempts, "error": error, "delaySeconds": delay},
                )
        else:
            queue.complete(group, now=now)
            counts.processed += len(group)
            counts.fetches += fetched
            stats.add("events_processed", len(group))
            stats.add("strava_fetches", fetched)
            log.info("mirror.processed", extra=fields | {"durationMs": _ms_since(started)})
    return counts


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
    fields = _event_fields(group[0].event) | {"attempt": attempts, "error": error}
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


def run_worker(
    queue: EventQueue,
    store: Store,
    strava_for: Callable[[str], StravaPort],
    *,
    stop: threading.Event,
    clock: Callable[[], datetime],
    stats: MirrorStats,
    idle_seconds: float = 0.5,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> None:
    """Process events until `stop` is set; sleep only while the queue has nothing ready."""
    while not stop.is_set():
        try:
            counts = process_events(
                queue, store, strava_for, now=clock(), max_attempts=max_attempts, stats=stats
            )
        except Exception as exc:  # the worker survives a broken store; /healthz says so
            stats.beat(clock(), f"{type(exc).__name__}: {exc}"[:200])
            log.exception("mirror.worker_error")
            stop.wait(idle_seconds * 4)
            continue
        stats.beat(clock(), None)
        if counts.processed + counts.retried + counts.dead == 0:
            stop.wait(idle_seconds)


# -- one group: every ready event about one object ------------------------------------
def _process_group(run: _Run, group: Sequence[QueuedEvent], deferred_until: datetime | None) -> int:
    """Apply the group's events; returns the number of Strava requests made."""
    events = [record.event for record in group]
    user_id = run.store.user_for_athlete(events[0].owner_id)
    if user_id is None:
        msg = f"unknown athlete {events[0].owner_id}"
        raise _Permanent(msg)
    if events[0].object_type == "athlete":
        _apply_athlete_events(run, user_id, events)
        return 0
    return _apply_activity_events(run, user_id, events, deferred_until)


def _apply_athlete_events(run: _Run, user_id: str, events: Sequence[WebhookEvent]) -> None:
    deauth = [e for e in events if e.is_deauthorization]
    if not deauth:
        return  # other athlete updates carry nothing the mirror keeps
    run.store.delete_strava_tokens(user_id)
    account = run.store.get_account(user_id)
    if account is not None:
        run.store.put_account(
            replace(
                account,
                status=AccountStatus.DISCONNECTED,
                status_detail="the athlete revoked garmin2strava's access on Strava",
            )
        )
    _audit(run, user_id, "strava.deauthorized", {"athleteId": deauth[-1].owner_id})
    log.warning("mirror.deauthorized", extra=_event_fields(deauth[-1]) | {"userId": user_id})


def _apply_activity_events(
    run: _Run, user_id: str, events: Sequence[WebhookEvent], deferred_until: datetime | None
) -> int:
    activity_id = events[0].object_id
    newest = max(e.happened_at for e in events)
    stored = run.store.get_workout(user_id, activity_id)
    if any(e.aspect_type == "delete" for e in events):
        # Strava never reuses an id: after a delete nothing in the group matters.
        if stored is not None:
            run.store.upsert_workout(soft_delete(stored, newest))
        return 0
    # A fetch made after a create already reflects it: only a row older than the
    # create (or no row at all) needs one.
    created = [e.happened_at for e in events if e.aspect_type == "create"]
    needs_fetch = stored is None or (bool(created) and stored.updated_at < max(created))
    if needs_fetch:
        if deferred_until is not None:  # a fetch of this batch already hit the limit
            raise _Deferred(deferred_until)
        workout = _fetch(run, user_id, activity_id, newest)
        if workout is not None:
            run.store.upsert_workout(workout)
        elif stored is not None:
            run.store.upsert_workout(soft_delete(stored, newest))
        return 1
    assert stored is not None
    # Updates carry title/type/private themselves: no request. apply_update keeps each
    # field's newest change, whatever order the events come in; the store keeps
    # whichever row is newest.
    workout = stored
    for event in events:
        if event.aspect_type == "update":
            workout = apply_update(workout, event.updates, event.happened_at)
    if workout is not stored:
        run.store.upsert_workout(workout)
    return 0


def _fetch(run: _Run, user_id: str, activity_id: int, as_of: datetime) -> Workout | None:
    """The activity as Strava has it now; None when Strava says it is gone. The fetch
    comes after every event of the group, so the row is stamped with the newest."""
    try:
        raw = run.strava_for(user_id).get_activity(activity_id)
    except RateLimited as exc:  # StravaAppInactive too: no account is at fault
        raise _Deferred(exc.until, str(exc)) from exc
    except StravaNotFound:
        return None
    except StravaAuthError as exc:
        detail = {"activityId": activity_id, "error": str(exc)[:200]}
        _audit(run, user_id, "strava.auth_failed", detail)
        log.warning("mirror.strava_auth_failed", extra={"userId": user_id, **detail})
        msg = f"Strava refused the token of {user_id}"
        raise _Permanent(msg) from exc
    try:
        return normalize_activity(raw, user_id=user_id, updated_at=as_of)
    except BadActivity as exc:
        msg = f"activity {activity_id}: {exc}"
        raise _Permanent(msg) from exc


def _bury(run: _Run, queue: EventQueue, group: Sequence[QueuedEvent], error: str) -> None:
    queue.dead_letter(group, now=run.now, error=error)
    event = group[0].event
    log.error("mirror.dead_letter", extra=_event_fields(event) | {"error": error})
    user_id = run.store.user_for_athlete(event.owner_id)
    if user_id is not None:
        detail = {
            "queueIds": [r.queue_id for r in group],
            "objectType": event.object_type,
            "objectId": event.object_id,
            "error": error,
        }
        _audit(run, user_id, "mirror.dead_letter", detail)


def _audit(run: _Run, user_id: str, kind: str, detail: dict[str, Any]) -> None:
    event = AuditEvent(
        user_id=user_id, at=run.now, kind=kind, event_id=uuid.uuid4().hex, detail=detail
    )
    run.store.add_audit(event, retention_days=run.retention_days)


def _event_fields(event: WebhookEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "correlationId": event.correlation_id,
        "athleteId": event.owner_id,
        "eventType": f"{event.object_type}.{event.aspect_type}",
    }
    if event.object_type == "activity":
        fields["activityId"] = event.object_id
    return fields


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
