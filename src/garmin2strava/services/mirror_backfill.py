"""Mirror backfill: fill `WORKOUT#STRAVA#{id}` rows from Strava's activity list.

The webhook keeps the mirror current from the moment the subscription exists; this
fills in what came before. Pages of 200 (one read each), oldest first, paced by the
shared read budget: when it is spent, wait for the window and go on. A cursor in the
store's application state (the last start seen) makes an interrupted run resumable.
When the list is exhausted, `Account.mirror_covers_since` tells the uploader it may
answer its existence check from the mirror for activities starting from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from garmin2strava.domain.workouts import normalize_activity
from garmin2strava.errors import G2SError, InvalidActivity, RateLimited
from garmin2strava.ports import Store

__all__ = ["ActivityLister", "MirrorBackfillResult", "backfill_mirror", "cursor_key"]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHECKPOINT_EVERY = 50  # rows between cursor writes; a resumed run redoes at most these


@runtime_checkable
class ActivityLister(Protocol):
    """What the backfill needs from Strava (services.strava_access.StravaAccess has it)."""

    def list_all_activities(
        self, *, after: datetime, per_page: int = 200
    ) -> Iterator[dict[str, Any]]: ...


@dataclass(slots=True)
class MirrorBackfillResult:
    stored: int = 0  # rows written by this run
    skipped: int = 0  # activities Strava sent that the mirror cannot read
    waits: list[datetime] = field(default_factory=list)  # budget windows waited for
    complete: bool = False
    covers_since: datetime | None = None
    athletes: set[int] = field(default_factory=set)  # linked to the user by this run


def cursor_key(user_id: str) -> str:
    return f"mirror_backfill#{user_id}"


def backfill_mirror(
    store: Store,
    strava: ActivityLister,
    user_id: str,
    *,
    since: datetime | None,
    clock: Callable[[], datetime],
    wait_until: Callable[[datetime], bool],
) -> MirrorBackfillResult:
    """Fill the mirror of `user_id` with every activity starting at or after `since`
    (all of them when None). `wait_until(t)` waits for the budget window at `t` and
    returns False to stop early (the cursor keeps the progress)."""
    result = MirrorBackfillResult()
    cursor = _load_cursor(store, user_id, since)
    while True:
        try:
            _copy_pages(store, strava, user_id, cursor=cursor, result=result, clock=clock)
        except RateLimited as exc:
            _save_cursor(store, user_id, cursor)
            result.waits.append(exc.until)
            log.info(
                "mirror_backfill.waiting",
                extra={"userId": user_id, "until": exc.until.isoformat(), "stored": cursor.stored},
            )
            if not wait_until(exc.until):
                return result
            continue
        except BaseException:
            _save_cursor(store, user_id, cursor)
            raise
        break
    covers = since or cursor.first_start or EPOCH
    _mark_covered(store, user_id, covers)
    cursor.done = True
    _save_cursor(store, user_id, cursor)
    result.complete = True
    result.covers_since = covers
    log.info(
        "mirror_backfill.complete",
        extra={"userId": user_id, "stored": cursor.stored, "coversSince": covers.isoformat()},
    )
    return result


@dataclass(slots=True)
class _Cursor:
    since: datetime | None
    after: datetime  # exclusive lower bound of the next listing
    first_start: datetime | None = None
    stored: int = 0
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "after": self.after.isoformat(),
            "firstStart": self.first_start.isoformat() if self.first_start else None,
            "stored": self.stored,
            "done": self.done,
        }


def _load_cursor(store: Store, user_id: str, since: datetime | None) -> _Cursor:
    start = (since - timedelta(seconds=1)) if since else EPOCH
    fresh = _Cursor(since=since, after=start)
    saved = store.get_app_state(cursor_key(user_id))
    if not saved or saved.get("done"):
        return fresh
    saved_since = datetime.fromisoformat(saved["since"]) if saved.get("since") else None
    if saved_since != since:
        return fresh  # another range was asked for: start over
    first = saved.get("firstStart")
    return _Cursor(
        since=since,
        after=datetime.fromisoformat(saved["after"]),
        first_start=datetime.fromisoformat(first) if first else None,
        stored=int(saved.get("stored", 0)),
    )


def _save_cursor(store: Store, user_id: str, cursor: _Cursor) -> None:
    store.put_app_state(cursor_key(user_id), cursor.to_dict())


def _copy_pages(
    store: Store,
    strava: ActivityLister,
    user_id: str,
    *,
    cursor: _Cursor,
    result: MirrorBackfillResult,
    clock: Callable[[], datetime],
) -> None:
    for n, raw in enumerate(strava.list_all_activities(after=cursor.after), start=1):
        # Whole seconds, like webhook event times: an update event from the same second
        # as this listing must still apply over the row.
        listed_at = clock().replace(microsecond=0)
        try:
            workout = normalize_activity(raw, user_id=user_id, updated_at=listed_at)
        except InvalidActivity as exc:
            result.skipped += 1
            log.warning(
                "mirror_backfill.unreadable_activity",
                extra={"userId": user_id, "activityId": raw.get("id"), "error": str(exc)},
            )
            continue
        if workout.athlete_id not in result.athletes:
            _link_athlete(store, user_id, workout.athlete_id)
            result.athletes.add(workout.athlete_id)
        if store.upsert_workout(workout):
            result.stored += 1
            cursor.stored += 1
        if cursor.first_start is None or workout.start_utc < cursor.first_start:
            cursor.first_start = workout.start_utc
        # Starts are whole seconds: one second back re-lists this start (an idempotent
        # upsert) and never skips another activity that shares it.
        cursor.after = max(cursor.after, workout.start_utc - timedelta(seconds=1))
        if n % _CHECKPOINT_EVERY == 0:
            _save_cursor(store, user_id, cursor)


def _link_athlete(store: Store, user_id: str, athlete_id: int) -> None:
    """Webhook events name the athlete only: an account made from settings learns its
    athlete id here (creating it made no Strava request), so its events find it."""
    if store.user_for_athlete(athlete_id) != user_id:
        store.link_athlete(athlete_id, user_id)
        log.info(
            "mirror_backfill.athlete_linked", extra={"userId": user_id, "athleteId": athlete_id}
        )
    account = store.get_account(user_id)
    if account is not None and account.strava_athlete_id is None:
        store.put_account(replace(account, strava_athlete_id=athlete_id))


def _mark_covered(store: Store, user_id: str, covers: datetime) -> None:
    account = store.get_account(user_id)
    if account is None:
        msg = f"no account {user_id!r}"
        raise G2SError(msg)
    store.put_account(replace(account, mirror_covers_since=covers))
