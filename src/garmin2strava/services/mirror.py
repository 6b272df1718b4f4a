"""The mirror: take Strava's webhook events, keep `WORKOUT#STRAVA#{id}` rows current.

`WebhookReceiver` runs inside Strava's 2-second budget: check the path secret,
validate, enqueue, answer. It imports nothing heavy and never calls Strava or waits
for the store (the stored subscription id is re-read in the background). Every
well-formed event gets the same answer, whether it names our subscription or not, so
the answer tells a stranger nothing; the difference is logged and counted.

`process_events` is the worker: one claim of grouped events, one Strava fetch per
activity at most, retries with backoff, dead letters after the last attempt. Events of
athletes we do not know, or of a disconnected account, are dropped (counted, never
dead letters). A deauthorization is obeyed only once Strava refused a token refresh:
then the athlete's tokens, mirrored activities and audit trail are deleted (Strava's
API Agreement), the upload ledger is kept so a reconnect never uploads twice, and the
account is disconnected. A Strava outage (5xx, timeout, refused connection) is waited
out however long it lasts, never dead-lettered.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from garmin2strava.domain import upload_rules
from garmin2strava.domain.models import AccountStatus, AuditEvent, LedgerEntry, Workout
from garmin2strava.domain.webhook import (
    BadEvent,
    QueuedEvent,
    WebhookEvent,
    check_handshake,
    derive_path_secret,
    parse_event,
    path_secret_matches,
)
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
    EventSink,
    StravaReads,
    StravaTokenStore,
    StreamStore,
    WorkoutMirror,
)
from garmin2strava.services.mirror_backfill import cursor_key
from garmin2strava.services.streams import take_after_fetch

__all__ = [
    "NOT_READY",
    "RECEIVED",
    "SUBSCRIPTION_STATE_KEY",
    "MirrorCounts",
    "MirrorStats",
    "SubscriptionSource",
    "WebhookAnswer",
    "WebhookReceiver",
    "process_events",
    "remember_subscription",
    "run_worker",
    "subscription_from_state",
]

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0  # 1 s, 2 s, 4 s, ...
DEFAULT_MAX_ATTEMPTS = 3
# After its last counted attempt an event that meets a Strava outage waits half its
# age again (x1.5 each time), at most this long, and is never dead-lettered.
OUTAGE_MAX_WAIT_SECONDS = 900.0
# App state written by `webhook subscribe` / `webhook list`: {"subscriptionId": int}.
SUBSCRIPTION_STATE_KEY = "webhook_subscription"
_LOG_EVERY_S = 60.0  # an attacker's flood of one kind costs one log line a minute


class OurUploads(Protocol):
    """The two ledger operations of a `create` that shows our upload as an activity."""

    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]: ...
    def put_upload(self, entry: LedgerEntry) -> None: ...


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


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What the HTTP entrypoint sends back; nothing in `body` comes from a secret."""

    status: int
    body: Mapping[str, Any]


# The one answer to every well-formed event: queued, duplicate, foreign subscription
# and unknown athlete alike.
RECEIVED = WebhookAnswer(200, {"status": "received"})
# No subscription id known at all: refuse every event alike; Strava retries later.
NOT_READY = WebhookAnswer(503, {"error": "not accepting events yet"})


def subscription_from_state(value: Mapping[str, Any] | None) -> int | None:
    """The subscription id in the app state `webhook subscribe` wrote, or None."""
    found = (value or {}).get("subscriptionId")
    if isinstance(found, int) and not isinstance(found, bool) and found > 0:
        return found
    return None


def remember_subscription(store: AppState, subscription_id: int | None, *, now: datetime) -> None:
    """Store the application's subscription id (None: there is none)."""
    store.put_app_state(
        SUBSCRIPTION_STATE_KEY, {"subscriptionId": subscription_id, "recordedAt": now.isoformat()}
    )


class SubscriptionSource:
    """Our subscription id as the receiver checks it: the setting when given
    (STRAVA_SUBSCRIPTION_ID), else what `read` returns (the id `webhook subscribe` and
    `webhook list` stored). `load` reads synchronously (at start-up); afterwards
    `current` never waits: a stale value starts a background re-read, every
    `refresh_s` while an id is known and every `retry_s` while none is."""

    def __init__(
        self,
        *,
        fixed: int | None = None,
        read: Callable[[], int | None] | None = None,
        refresh_s: float = 60.0,
        retry_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = fixed
        self._read = read
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: int | None = None
        self._loaded_at = -math.inf
        self._refreshing = False

    @property
    def source(self) -> str | None:
        """ "setting", "store", or None when no id is known."""
        if self._fixed is not None:
            return "setting"
        return "store" if self._value is not None else None

    def load(self) -> int | None:
        """Read the stored id now; a failed read keeps the last value (logged)."""
        if self._fixed is not None or self._read is None:
            return self._fixed
        try:
            value = self._read()
        except Exception as exc:  # noqa: BLE001 (a broken store must not break the webhook)
            log.warning("webhook.subscription_unreadable", extra={"error": type(exc).__name__})
            value = self._value
        with self._lock:
            self._value = value
            self._loaded_at = self._monotonic()
            self._refreshing = False
        return value

    def current(self) -> int | None:
        if self._fixed is not None or self._read is None:
            return self._fixed
        with self._lock:
            due = self._refresh_s if self._value is not None else self._retry_s
            start = not self._refreshing and self._monotonic() - self._loaded_at >= due
            if start:
                self._refreshing = True
            value = self._value
        if start:
            threading.Thread(target=self.load, name="webhook-subscription", daemon=True).start()
        return value


class _Throttle:
    """At most one log line per `every_s` for one kind of event; counts the rest."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def due(self, kind: str) -> int | None:
        """None: stay silent. Else log now, with this many lines suppressed before."""
        now = time.monotonic()
        with self._lock:
            if now < self._next.get(kind, -math.inf):
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return None
            self._next[kind] = now + self._every_s
            return self._suppressed.pop(kind, 0)


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
    """The two webhook requests on the secret path: the subscription handshake and
    event delivery. `path_secret` defaults to the one derived from `verify_token`;
    with neither, no path is ours. `subscription_id` (a fixed id) or `subscriptions`
    (a SubscriptionSource) tell our subscription; with neither, every event is refused."""

    def __init__(
        self,
        queue: EventSink,
        *,
        verify_token: str | None,
        stats: MirrorStats,
        clock: Callable[[], datetime],
        subscription_id: int | None = None,
        subscriptions: SubscriptionSource | None = None,
        path_secret: str | None = None,
    ) -> None:
        self._queue = queue
        self._verify_token = verify_token
        if path_secret is None and verify_token:
            path_secret = derive_path_secret(verify_token)
        self._path_secret = path_secret
        self._subscriptions = subscriptions or SubscriptionSource(fixed=subscription_id)
        self._stats = stats
        self._clock = clock
        self._throttle = _Throttle()

    @property
    def subscriptions(self) -> SubscriptionSource:
        return self._subscriptions

    @property
    def has_path(self) -> bool:
        """A path secret is known: Strava can reach this receiver at all."""
        return self._path_secret is not None

    def accepts_path(self, secret: str) -> bool:
        """Whether `secret` (the path segment after /webhooks/strava/) is ours; constant
        time. Every other path gets the server's ordinary 404."""
        ok = path_secret_matches(secret, self._path_secret)
        if not ok:
            self._stats.add("requests_wrong_path")
        return ok

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
            "subscription_id": 1,
            "updates": {},
        }
        event = parse_event(json.dumps(sample).encode(), now=self._clock())
        _event_fields(event)
        self._subscriptions.current()

    def receive(self, body: bytes) -> WebhookAnswer:
        started = time.perf_counter()
        try:
            event = parse_event(body, now=self._clock())
        except BadEvent as exc:
            self._stats.add("events_rejected_bad")
            log.warning("webhook.event_rejected", extra={"reason": exc.reason})
            return WebhookAnswer(400, {"error": exc.reason})
        ours = self._subscriptions.current()
        if ours is None:
            self._stats.add("events_rejected_unconfigured")
            self._log_throttled(
                "webhook.subscription_unknown",
                {"hint": "run `garmin2strava webhook subscribe` (or `webhook list`)"},
            )
            return NOT_READY
        if event.subscription_id != ours:
            self._stats.add("events_rejected_foreign")
            self._log_throttled(
                "webhook.foreign_subscription", {"subscriptionId": event.subscription_id}
            )
            return RECEIVED
        new = self._queue.enqueue(event, now=self._clock())
        self._stats.add("events_received" if new else "events_duplicate")
        log.info(
            "webhook.event_queued" if new else "webhook.event_duplicate",
            extra=_event_fields(event) | {"durationMs": _ms_since(started)},
        )
        return RECEIVED

    def _log_throttled(self, name: str, extra: dict[str, Any]) -> None:
        suppressed = self._throttle.due(name)
        if suppressed is not None:
            log.warning(name, extra=extra | {"suppressedSinceLast": suppressed})


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
class _Run:
    """What every step of one `process_events` call needs."""

    store: MirrorStore
    strava_for: Callable[[str], StravaReads]
    now: datetime
    retention_days: int
    stats: MirrorStats
    stream_types: tuple[str, ...] = ()  # G2S_MIRROR_STREAMS: read after a create's fetch


class _Deferred(Exception):
    """Internal: no Strava request before `until` (the budget is spent, the
    application is inactive, or a fetch of this batch met an outage)."""

    def __init__(self, until: datetime, reason: str = "") -> None:
        self.until = until
        self.reason = reason
        super().__init__(until.isoformat())


class _Permanent(Exception):
    """Internal: retrying cannot help (revoked token, bad JSON)."""


class _Dropped(Exception):
    """Internal: the events are settled without effect (`reason` names why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# Throttles the worker's "dropped" lines: a flood of unknown athletes logs once a minute.
_DROP_THROTTLE = _Throttle()


def process_events(
    queue: EventQueue,
    store: MirrorStore,
    strava_for: Callable[[str], StravaReads],
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
    run = _Run(store, strava_for, now, audit_retention_days, stats, tuple(stream_types))
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
        except _Dropped as exc:
            queue.complete(group, now=now)
            counts.dropped += len(group)
            stats.add(f"events_dropped_{exc.reason}", len(group))
            suppressed = _DROP_THROTTLE.due(exc.reason)
            if suppressed is not None:
                log.warning(
                    "mirror.event_dropped",
                    extra=fields | {"reason": exc.reason, "suppressedSinceLast": suppressed},
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
            _retry_or_bury(
                run, queue, group, exc, counts=counts, fields=fields, max_attempts=max_attempts
            )
        else:
            queue.complete(group, now=now)
            counts.processed += len(group)
            counts.fetches += fetched
            stats.add("events_processed", len(group))
            stats.add("strava_fetches", fetched)
            log.info("mirror.processed", extra=fields | {"durationMs": _ms_since(started)})
    return counts


def _retry_or_bury(
    run: _Run,
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
    run.stats.add("events_failed", len(group))
    if attempts >= max_attempts:
        _bury(run, queue, group, error)
        counts.dead += len(group)
        run.stats.add("events_dead", len(group))
        return
    delay = BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
    queue.fail(group, retry_at=run.now + timedelta(seconds=delay), error=error)
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
    store: MirrorStore,
    strava_for: Callable[[str], StravaReads],
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
def _process_group(run: _Run, group: Sequence[QueuedEvent], deferred_until: datetime | None) -> int:
    """Apply the group's events; returns the number of Strava requests made."""
    events = [record.event for record in group]
    user_id = run.store.user_for_athlete(events[0].owner_id)
    if user_id is None:
        raise _Dropped("unknown_athlete")
    account = run.store.get_account(user_id)
    if account is not None and account.status is AccountStatus.DISCONNECTED:
        raise _Dropped("disconnected")  # no Strava request for it until it reconnects
    if events[0].object_type == "athlete":
        return _apply_athlete_events(run, user_id, events)
    return _apply_activity_events(run, user_id, events, deferred_until)


def _apply_athlete_events(run: _Run, user_id: str, events: Sequence[WebhookEvent]) -> int:
    """A deauthorization is obeyed only when Strava confirms it: one token refresh,
    which Strava refuses once the athlete revoked access. Returns the requests made."""
    deauth = [e for e in events if e.is_deauthorization]
    if not deauth:
        return 0  # other athlete updates carry nothing the mirror keeps
    fields = _event_fields(deauth[-1]) | {"userId": user_id}
    strava = run.strava_for(user_id)
    if run.store.get_strava_tokens(user_id) is None or not isinstance(strava, AccessCheck):
        # Nothing to ask Strava with: nothing proves the event, so it changes nothing.
        run.stats.add("deauthorizations_unverifiable")
        log.warning("mirror.deauthorization_unverifiable", extra=fields)
        return 0
    if not strava.access_revoked():
        run.stats.add("deauthorizations_refuted")
        _audit(run, user_id, "strava.deauthorization_refuted", {"athleteId": deauth[-1].owner_id})
        log.warning("mirror.deauthorization_refuted", extra=fields)
        return 1
    _forget_athlete(run, user_id, deauth[-1].owner_id)
    run.stats.add("deauthorizations")
    log.warning("mirror.deauthorized", extra=fields)
    return 1


def _forget_athlete(run: _Run, user_id: str, athlete_id: int) -> None:
    """Strava's API Agreement: the athlete revoked access, so their Strava data goes.
    Tokens first (no request can follow), then the mirror and the audit trail; the
    upload ledger stays (Garmin ids and the ids of what we uploaded), so a reconnect
    never uploads an activity twice."""
    run.store.delete_strava_tokens(user_id)
    removed = run.store.forget_strava_data(user_id)
    run.store.put_app_state(cursor_key(user_id), {})  # a later backfill starts afresh
    account = run.store.get_account(user_id)
    if account is not None:
        run.store.put_account(
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
    _audit(run, user_id, "strava.deauthorized", {"athleteId": athlete_id, "itemsDeleted": removed})


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
            _settle_our_upload(run, user_id, workout)
            # Streams right after the fetch that brought the activity in: at most one
            # read, never again once recorded; marked pending when the budget is short.
            streams = take_after_fetch(
                run.store, run.strava_for(user_id), workout, run.stream_types, now=run.now
            )
            return 1 + streams.reads
        if stored is not None:
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


def _settle_our_upload(run: _Run, user_id: str, workout: Workout) -> None:
    """An activity made from our upload (our external_id) settles its ledger entry: the
    uploader then needs no status poll, and this fetch was to be made anyway."""
    garmin_id = upload_rules.garmin_id_of(workout.external_id)
    if garmin_id is None:
        return
    entry = run.store.get_uploads(user_id, [garmin_id]).get(garmin_id)
    settled = (
        None
        if entry is None
        else upload_rules.settled_by_webhook(entry, workout.activity_id, now=run.now)
    )
    if settled is None:
        return
    run.store.put_upload(settled)
    run.stats.add("uploads_settled_by_webhook")
    log.info(
        "upload.settled_by_webhook",
        extra={"userId": user_id, "activityId": garmin_id, "stravaId": workout.activity_id},
    )


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
    except InvalidActivity as exc:
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
