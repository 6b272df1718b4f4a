"""Activity streams in the mirror: read once per activity, when the budget can spare it.

The worker takes an activity's streams right after the fetch that brought it in
(`take_after_fetch`), unless less than `BACKGROUND_RESERVE` of a read window is left:
then the activity is marked pending, and `catch_up_streams` (the daemon, the
maintenance Lambda, `mirror reconcile`) or `backfill_streams` (`mirror backfill
--streams`) reads it later. A read that fails for another reason is tried later and
later (domain/streams.py `stream_retry_at`) until MAX_STREAM_FAILURES, then given up
with a note (`streams.gave_up`); the budget never counts as a failure.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from garmin2strava.domain.models import AccountStatus, Workout
from garmin2strava.domain.streams import (
    ActivityStreams,
    gave_up_note,
    has_recorded_file,
    stream_retry_at,
)
from garmin2strava.errors import G2SError, RateLimited, StravaAuthError, StravaNotFound
from garmin2strava.ports import Store, StreamStore, WorkoutMirror, WorkoutQueries

__all__ = [
    "CatchUpResult",
    "StreamOutcome",
    "StreamReader",
    "backfill_streams",
    "catch_up_all_streams",
    "catch_up_streams",
    "take_after_fetch",
    "take_streams",
]

log = logging.getLogger(__name__)

# Accounts whose Strava reads would be refused until the athlete authorizes again.
_NO_STRAVA_ACCESS = frozenset({AccountStatus.NEEDS_STRAVA_AUTH, AccountStatus.DISCONNECTED})


class StreamReader(Protocol):
    """What stream reads need from Strava (ports.StravaPort has it)."""

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]: ...


class StreamOutcome(enum.Enum):
    STORED = "stored"  # streams kept
    NONE = "none"  # Strava has none: recorded, never asked again
    PENDING = "pending"  # not read now (budget, an error): marked for later
    GAVE_UP = "gave_up"  # failed MAX_STREAM_FAILURES times: kept as read, with a note
    SKIPPED = "skipped"  # nothing to read (no streams wanted, manual, already read)


@dataclass(frozen=True, slots=True)
class StreamRead:
    outcome: StreamOutcome
    reads: int = 0
    until: datetime | None = None  # when PENDING for the budget: when it reopens
    refused: bool = False  # when PENDING because Strava refused the account's token


class _MirroredStreams(StreamStore, WorkoutMirror, Protocol):
    """Catching up pending streams reads the workout they belong to."""


class _WalkedStreams(StreamStore, WorkoutQueries, Protocol):
    """A streams backfill walks the mirror's workouts."""


def take_streams(
    store: StreamStore,
    strava: StreamReader,
    user_id: str,
    activity_id: int,
    types: Sequence[str],
    *,
    now: datetime,
) -> StreamRead:
    """One read of the activity's streams, kept in the store; marked pending when the
    read cannot be made now. Never raises for Strava's sake: the activity itself is
    already stored, and its event must not be retried for its streams."""
    fields = {"userId": user_id, "activityId": activity_id}
    try:
        found = strava.get_activity_streams(activity_id, types)
    except RateLimited as exc:
        store.mark_streams_pending(user_id, activity_id)
        log.info("streams.deferred", extra=fields | {"until": exc.until.isoformat()})
        return StreamRead(StreamOutcome.PENDING, until=exc.until)
    except StravaNotFound:
        found = {}
    except StravaAuthError as exc:
        # The account's token, not this activity: no failure counted (re-authorizing
        # must find every pending read still there), and the account's pass ends.
        store.mark_streams_pending(user_id, activity_id)
        log.warning("streams.refused", extra=fields | {"error": str(exc)[:200]})
        return StreamRead(StreamOutcome.PENDING, reads=1, refused=True)
    except G2SError as exc:  # transient (a 5xx for this activity): counted, retried later
        return _failed(store, user_id, activity_id, str(exc)[:200], now=now)
    kept = {kind: stream for kind, stream in found.items() if kind in types}
    store.put_streams(
        ActivityStreams(user_id=user_id, activity_id=activity_id, fetched_at=now, streams=kept)
    )
    outcome = StreamOutcome.STORED if kept else StreamOutcome.NONE
    log.info("streams.stored", extra=fields | {"types": sorted(kept), "outcome": outcome.value})
    return StreamRead(outcome, reads=1)


def _failed(
    store: StreamStore, user_id: str, activity_id: int, error: str, *, now: datetime
) -> StreamRead:
    """A failed read counted in the pending mark: retried later, or given up."""
    fields = {"userId": user_id, "activityId": activity_id, "error": error}
    pending = store.get_pending_streams(user_id, activity_id)
    failures = (pending.failures if pending else 0) + 1
    retry_at = stream_retry_at(failures, now=now)
    if retry_at is None:
        note = gave_up_note(failures, error)
        store.put_streams(
            ActivityStreams(user_id=user_id, activity_id=activity_id, fetched_at=now, note=note)
        )
        log.warning("streams.gave_up", extra=fields | {"failures": failures})
        return StreamRead(StreamOutcome.GAVE_UP, reads=1)
    store.mark_streams_failed(user_id, activity_id, failures=failures, retry_at=retry_at)
    log.warning(
        "streams.fetch_failed",
        extra=fields | {"failures": failures, "retryAt": retry_at.isoformat()},
    )
    return StreamRead(StreamOutcome.PENDING, reads=1)


def take_after_fetch(
    store: StreamStore,
    strava: StreamReader,
    workout: Workout,
    types: Sequence[str],
    *,
    now: datetime,
) -> StreamRead:
    """The streams of an activity just fetched into the mirror, if they are wanted, it
    has a recorded file, and they were never read."""
    if not types or not has_recorded_file(workout.raw or {}) or workout.is_deleted:
        return StreamRead(StreamOutcome.SKIPPED)
    if store.get_streams(workout.user_id, workout.activity_id) is not None:
        return StreamRead(StreamOutcome.SKIPPED)
    return take_streams(store, strava, workout.user_id, workout.activity_id, types, now=now)


@dataclass(slots=True)
class CatchUpResult:
    stored: int = 0
    none: int = 0
    reads: int = 0
    gave_up: int = 0  # failed too often: kept as read with no streams
    left: int = 0  # still pending when the pass stopped
    until: datetime | None = None  # the budget stopped the pass until then
    stopped: bool = False  # the stop event ended the pass
    refused: bool = False  # Strava refused the account's token: the pass ended
    done: list[int] = field(default_factory=list)


def catch_up_streams(
    store: _MirroredStreams,
    strava: StreamReader,
    user_id: str,
    types: Sequence[str],
    *,
    now: datetime,
    limit: int = 100,
    stop: threading.Event | None = None,
) -> CatchUpResult:
    """Read the pending streams of `user_id` that are due (a failed one waits for its
    retry time), lowest id first, until none is left, the budget says wait, `limit`
    reads were made, or `stop` is set."""
    result = CatchUpResult()
    pending = store.list_pending_streams(user_id, limit=limit, due_at=now)
    for n, activity_id in enumerate(pending):
        if stop is not None and stop.is_set():
            result.left = len(pending) - n
            result.stopped = True
            break
        read = _catch_up_one(store, strava, user_id, activity_id, types, now=now)
        result.reads += read.reads
        if read.outcome is StreamOutcome.PENDING:
            if read.refused:  # every read of this account would be refused alike
                result.left = len(pending) - n
                result.refused = True
                break
            if read.until is None:
                continue  # this one failed (logged); it stays pending, the rest go on
            result.left = len(pending) - n
            result.until = read.until
            break
        if read.outcome is StreamOutcome.STORED:
            result.stored += 1
        elif read.outcome is StreamOutcome.NONE:
            result.none += 1
        elif read.outcome is StreamOutcome.GAVE_UP:
            result.gave_up += 1
        result.done.append(activity_id)
    if result.done or result.until:
        log.info(
            "streams.caught_up",
            extra={
                "userId": user_id,
                "stored": result.stored,
                "none": result.none,
                "gaveUp": result.gave_up,
                "left": result.left,
                "until": result.until.isoformat() if result.until else None,
            },
        )
    return result


def catch_up_all_streams(
    store: Store,
    strava_for: Callable[[str], StreamReader],
    types: Sequence[str],
    *,
    now: datetime,
    stop: threading.Event | None = None,
) -> dict[str, CatchUpResult]:
    """`catch_up_streams` for every enabled account with Strava tokens (a paused one
    waits for its resume), until the budget says wait or `stop` is set: the daemon's
    job and the Lambda maintenance function's second step. By user id."""
    results: dict[str, CatchUpResult] = {}
    for account in store.list_accounts():
        if stop is not None and stop.is_set():
            break
        if not account.enabled or account.status in _NO_STRAVA_ACCESS:
            continue  # paused, or waiting for the athlete to authorize again
        if store.get_strava_tokens(account.user_id) is None:
            continue
        result = catch_up_streams(
            store, strava_for(account.user_id), account.user_id, types, now=now, stop=stop
        )
        results[account.user_id] = result
        if result.until is not None:
            break  # the budget is the application's: every account waits
    return results


def _catch_up_one(
    store: _MirroredStreams,
    strava: StreamReader,
    user_id: str,
    activity_id: int,
    types: Sequence[str],
    *,
    now: datetime,
) -> StreamRead:
    existing = store.get_streams(user_id, activity_id)
    if existing is not None:  # read meanwhile: writing it again clears the mark, no read
        store.put_streams(existing)
        return StreamRead(StreamOutcome.SKIPPED)
    workout = store.get_workout(user_id, activity_id)
    if workout is None or workout.is_deleted or not has_recorded_file(workout.raw or {}):
        # Gone from Strava (or never had a file): nothing to read, so none is kept.
        store.put_streams(ActivityStreams(user_id=user_id, activity_id=activity_id, fetched_at=now))
        return StreamRead(StreamOutcome.NONE)
    return take_streams(store, strava, user_id, activity_id, types, now=now)


@dataclass(slots=True)
class StreamBackfillResult:
    stored: int = 0
    none: int = 0
    already: int = 0
    waits: list[datetime] = field(default_factory=list)
    complete: bool = False


def backfill_streams(
    store: _WalkedStreams,
    strava: StreamReader,
    user_id: str,
    types: Sequence[str],
    *,
    since: datetime | None,
    clock: Callable[[], datetime],
    wait_until: Callable[[datetime], bool],
) -> StreamBackfillResult:
    """Read the streams of every mirrored activity starting at or after `since` that
    has none yet, oldest first, paced by the background budget: when it refuses,
    `wait_until(t)` waits for it (False stops; a rerun goes on, as fetched activities
    are recorded)."""
    result = StreamBackfillResult()
    for workout in store.iter_workouts(user_id, since=since):
        if not has_recorded_file(workout.raw or {}):
            continue
        if store.get_streams(user_id, workout.activity_id) is not None:
            result.already += 1
            continue
        while True:
            read = take_streams(store, strava, user_id, workout.activity_id, types, now=clock())
            if read.outcome is not StreamOutcome.PENDING:
                break
            if read.until is None:
                break  # an error, not the budget: left pending for the catch-up
            result.waits.append(read.until)
            if not wait_until(read.until):
                return result
        if read.outcome is StreamOutcome.STORED:
            result.stored += 1
        elif read.outcome is StreamOutcome.NONE:
            result.none += 1
    result.complete = True
    return result
