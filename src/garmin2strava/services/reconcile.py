"""Reconciliation: notice what the webhook never said, and repair the mirror.

Every `G2S_MIRROR_RECONCILE_HOURS` a pass lists the athlete's activities since the
previous pass (less `OVERLAP`, for watches that sync days late and edits to the past
week), fetches and stores what the mirror lacks, checks a mirrored activity Strava no
longer lists (a 404 soft-deletes it) and takes Strava's name, type and visibility
where they differ (free: the list carries them). Its reads keep the uploader's
reserve; a pass cut short by the budget or a `stop` event keeps what it repaired and
is done again later.

A window pass never sees an activity that started before its window: a delete or
rename event Strava dropped for a run of last month would stay unrepaired for good.
So every `G2S_MIRROR_SWEEP_DAYS` the due pass is a sweep: it lists the whole history
(ceil(N/200) reads) and checks every live mirrored activity Strava did not list (one
read each). An activity the mirror lacks is fetched when it started in the window, as
a window pass does; an older one is stored from its list row, as `mirror backfill`
stores it, for no read. With no sweep recorded (a new install, or one from before
sweeps) the first due pass is a sweep: on an empty mirror that costs what a backfill
costs, and on an existing one it repairs what the window passes could not reach. The
time of the last complete sweep is kept next to the last pass (`sweptAt`); a sweep cut
short records nothing and stays due.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from garmin2strava.domain.models import Workout
from garmin2strava.domain.workouts import (
    apply_update,
    normalize_activity,
    soft_delete,
)
from garmin2strava.errors import (
    InvalidActivity,
    RateLimited,
    StravaAuthError,
    StravaNotFound,
    TransientError,
)
from garmin2strava.ports import Store
from garmin2strava.services.mirror_backfill import EPOCH, ActivityLister
from garmin2strava.services.streams import catch_up_streams, take_after_fetch

__all__ = [
    "LIST_PAGE",
    "OVERLAP",
    "ReconcileClient",
    "ReconcileReport",
    "reconcile_account",
    "reconcile_all",
    "reconcile_due",
    "state_key",
    "sweep_is_due",
]

log = logging.getLogger(__name__)

LIST_PAGE = 200  # activities a list read returns (Strava's maximum)
OVERLAP = timedelta(days=7)


class ReconcileClient(ActivityLister, Protocol):
    """What a pass needs from Strava (services.strava_access.StravaAccess has it)."""

    def get_activity(self, activity_id: int) -> dict[str, Any]: ...
    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]: ...


@dataclass(slots=True)
class ReconcileReport:
    user_id: str
    since: datetime
    listed: int = 0
    reads: int = 0  # Strava requests this pass made (list pages, fetches, streams)
    added: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)  # unlisted, but still on Strava
    deferred_until: datetime | None = None  # the budget stopped the pass
    stopped: bool = False  # the stop event ended the pass before it was complete
    complete: bool = False
    error: str | None = None  # this account's pass failed (Strava refused or was down)
    sweep: bool = False  # the whole history was listed, not the window since `since`


class _Stopped(Exception):
    """The stop event was set: the pass ends before its next Strava request."""


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise _Stopped


def state_key(user_id: str) -> str:
    return f"mirror_reconcile#{user_id}"


def reconcile_due(store: Store, user_id: str, *, now: datetime, every: timedelta) -> bool:
    """Whether the last complete pass of `user_id` is `every` old (or there was none)."""
    return _pass_is_due(store.get_app_state(state_key(user_id)), now=now, every=every)


def _pass_is_due(state: Mapping[str, Any] | None, *, now: datetime, every: timedelta) -> bool:
    last = _parse_time((state or {}).get("startedAt"))
    return last is None or now - last >= every


def sweep_is_due(
    state: Mapping[str, Any] | None, *, now: datetime, every: timedelta | None
) -> bool:
    """Whether the last complete sweep in a reconcile state is `every` old, or none is
    recorded (no state, or one stored before sweeps). Never when `every` is None or
    zero (G2S_MIRROR_SWEEP_DAYS=0)."""
    if every is None or every <= timedelta(0):
        return False
    last = _parse_time((state or {}).get("sweptAt"))
    return last is None or now - last >= every


def reconcile_all(
    store: Store,
    strava_for: Callable[[str], ReconcileClient],
    *,
    now: datetime,
    every: timedelta,
    stream_types: Sequence[str] = (),
    sweep_every: timedelta | None = None,
    only: str | None = None,
    force: bool = False,
    sweep: bool = False,
    stop: threading.Event | None = None,
) -> list[ReconcileReport]:
    """One pass for every enabled account with Strava tokens whose pass is due (a
    paused account has none), until `stop` is set. The pass is a sweep when one is
    due by `sweep_every` (see `sweep_is_due`) or when `sweep` asks for it."""
    reports = []
    for account in store.list_accounts():
        if only is not None and account.user_id != only:
            continue
        if stop is not None and stop.is_set():
            break
        if not account.enabled or store.get_strava_tokens(account.user_id) is None:
            continue
        # One read of the account's reconcile state says both whether a pass is due
        # and whether it is a sweep.
        state = store.get_app_state(state_key(account.user_id))
        if not force and not _pass_is_due(state, now=now, every=every):
            continue
        try:
            report = reconcile_account(
                store,
                strava_for(account.user_id),
                account.user_id,
                now=now,
                stream_types=stream_types,
                sweep=sweep or sweep_is_due(state, now=now, every=sweep_every),
                stop=stop,
            )
        except (StravaAuthError, TransientError) as exc:
            # This athlete's (a revoked token, a 5xx): the pass stays due for them, and
            # the accounts after them are not kept waiting behind it.
            log.warning(
                "reconcile.account_failed",
                extra={"userId": account.user_id, "error": str(exc)[:200]},
            )
            report = ReconcileReport(user_id=account.user_id, since=now, error=str(exc)[:200])
        reports.append(report)
        if report.deferred_until is not None:
            break  # the budget is the application's: the other accounts wait too
        if report.stopped:
            break
    return reports


def reconcile_account(
    store: Store,
    strava: ReconcileClient,
    user_id: str,
    *,
    now: datetime,
    stream_types: Sequence[str] = (),
    sweep: bool = False,
    stop: threading.Event | None = None,
) -> ReconcileReport:
    """One pass over the activities that started since the last pass (less OVERLAP),
    or over the whole history when `sweep`. Cut short by the budget or by `stop`, it
    keeps what it repaired and records no pass, so the account stays due."""
    previous = store.get_app_state(state_key(user_id)) or {}
    last = _parse_time(previous.get("startedAt"))
    window = (last or now) - OVERLAP
    report = ReconcileReport(user_id=user_id, since=EPOCH if sweep else window, sweep=sweep)
    # Whole seconds, like webhook event times: an update event from the same second
    # as this listing must still apply over what the listing wrote.
    listed_at = now.replace(microsecond=0)
    try:
        _check_stop(stop)
        listed = _apply_listing(
            store, strava, report, listed_at, stream_types, fetch_from=window, stop=stop
        )
        _check_unlisted(store, strava, report, listed, listed_at, stop=stop)
        if stream_types:
            _catch_up(store, strava, report, stream_types, now=now, stop=stop)
    except _Stopped:
        report.stopped = True
        log.info(
            "reconcile.stopped",
            extra={"userId": user_id, "reads": report.reads, "added": len(report.added)},
        )
        return report
    except RateLimited as exc:
        report.deferred_until = exc.until
        log.info(
            "reconcile.deferred",
            extra={"userId": user_id, "until": exc.until.isoformat(), "reads": report.reads},
        )
        return report
    report.complete = True
    swept_at = now.isoformat() if sweep else previous.get("sweptAt")
    store.put_app_state(
        state_key(user_id),
        {
            "startedAt": now.isoformat(),
            "since": report.since.isoformat(),
            "listed": report.listed,
            "reads": report.reads,
            "added": len(report.added),
            "deleted": len(report.deleted),
            "changed": len(report.changed),
            **({"sweptAt": swept_at} if isinstance(swept_at, str) else {}),
        },
    )
    log.info(
        "reconcile.done",
        extra={
            "userId": user_id,
            "since": report.since.isoformat(),
            "sweep": sweep,
            "listed": report.listed,
            "reads": report.reads,
            "added": report.added,
            "deleted": report.deleted,
            "changed": report.changed,
        },
    )
    return report


def _catch_up(
    store: Store,
    strava: ReconcileClient,
    report: ReconcileReport,
    stream_types: Sequence[str],
    *,
    now: datetime,
    stop: threading.Event | None,
) -> None:
    """The account's pending streams, after the listing repaired what it could."""
    _check_stop(stop)
    caught = catch_up_streams(store, strava, report.user_id, stream_types, now=now, stop=stop)
    report.reads += caught.reads
    if caught.stopped:
        raise _Stopped


def _apply_listing(
    store: Store,
    strava: ReconcileClient,
    report: ReconcileReport,
    listed_at: datetime,
    stream_types: Sequence[str],
    *,
    fetch_from: datetime,
    stop: threading.Event | None,
) -> set[int]:
    user_id = report.user_id
    seen: set[int] = set()
    report.reads += 1  # the first page; the adapter reads one more after each full page
    # Strava's `after` is exclusive: one second back lists an activity starting at
    # `since`; a sweep lists from Strava's time zero (after=0), its whole history.
    after = EPOCH if report.sweep else report.since - timedelta(seconds=1)
    for raw in strava.list_all_activities(after=after, per_page=LIST_PAGE):
        _check_stop(stop)  # before the fetch this item may need, or the next page
        report.listed += 1
        if report.listed % LIST_PAGE == 0:
            report.reads += 1
        activity_id = raw.get("id")
        if not isinstance(activity_id, int):
            continue
        seen.add(activity_id)
        stored = store.get_workout(user_id, activity_id)
        if stored is None:
            if not _add_listed(store, report, raw, listed_at=listed_at, before=fetch_from):
                _add(store, strava, report, activity_id, listed_at=listed_at, types=stream_types)
        elif not stored.is_deleted:
            _apply_changes(store, report, stored, raw, listed_at)
    return seen


def _add_listed(
    store: Store,
    report: ReconcileReport,
    listed: dict[str, Any],
    *,
    listed_at: datetime,
    before: datetime,
) -> bool:
    """A sweep's missing activity that started before the window: stored from its list
    row, as `mirror backfill` stores it, for no read (fetching each of a history the
    mirror never held would cost one read per activity). False: fetch it instead."""
    if not report.sweep:
        return False
    try:
        workout = normalize_activity(listed, user_id=report.user_id, updated_at=listed_at)
    except InvalidActivity:
        return False  # the fetch reads it, or says why it cannot
    if workout.start_utc >= before:
        return False  # in the window: fetched with its streams, as a window pass does
    store.upsert_workout(workout)
    report.added.append(workout.activity_id)
    return True


def _add(
    store: Store,
    strava: ReconcileClient,
    report: ReconcileReport,
    activity_id: int,
    *,
    listed_at: datetime,
    types: Sequence[str],
) -> None:
    """A dropped create: fetch the activity (and its streams) as the worker would."""
    report.reads += 1
    try:
        raw = strava.get_activity(activity_id)
        workout = normalize_activity(raw, user_id=report.user_id, updated_at=listed_at)
    except StravaNotFound:
        return  # deleted between the list and the fetch: its delete event follows
    except InvalidActivity as exc:
        log.warning(
            "reconcile.unreadable_activity",
            extra={"userId": report.user_id, "activityId": activity_id, "error": str(exc)},
        )
        return
    store.upsert_workout(workout)
    report.added.append(activity_id)
    streams = take_after_fetch(store, strava, workout, types, now=listed_at)
    report.reads += streams.reads


def _apply_changes(
    store: Store,
    report: ReconcileReport,
    stored: Workout,
    listed: dict[str, Any],
    listed_at: datetime,
) -> None:
    """Name, type and visibility as Strava lists them, where the mirror differs."""
    updates: dict[str, str] = {}
    name = listed.get("name")
    if isinstance(name, str) and name != stored.name:
        updates["title"] = name
    sport = listed.get("sport_type") or listed.get("type")
    if isinstance(sport, str) and sport != stored.sport_type:
        updates["type"] = sport
    private = listed.get("private")
    if isinstance(private, bool) and private != stored.is_private:
        updates["private"] = "true" if private else "false"
    visibility = listed.get("visibility")
    raw = stored.raw or {}
    new_visibility = isinstance(visibility, str) and raw.get("visibility") != visibility
    if not updates and not new_visibility:
        return
    workout = apply_update(stored, updates, listed_at) if updates else stored
    if new_visibility:
        workout = replace(
            workout,
            raw={**(workout.raw or {}), "visibility": visibility},
            updated_at=max(workout.updated_at, listed_at),
        )
    if workout is not stored and store.upsert_workout(workout):
        report.changed.append(stored.activity_id)


def _check_unlisted(
    store: Store,
    strava: ReconcileClient,
    report: ReconcileReport,
    listed: set[int],
    listed_at: datetime,
    *,
    stop: threading.Event | None,
) -> None:
    """A live mirrored activity in the window (a sweep: any) that Strava did not list:
    a dropped delete when Strava answers 404 (one read each)."""
    for workout in _unlisted(store, report, listed, listed_at):
        _check_stop(stop)
        report.reads += 1
        try:
            raw = strava.get_activity(workout.activity_id)
        except StravaNotFound:
            store.upsert_workout(soft_delete(workout, listed_at))
            report.deleted.append(workout.activity_id)
            continue
        try:
            fresh = normalize_activity(raw, user_id=report.user_id, updated_at=listed_at)
        except InvalidActivity:
            continue
        store.upsert_workout(fresh)
        report.confirmed.append(workout.activity_id)


def _unlisted(
    store: Store, report: ReconcileReport, listed: set[int], listed_at: datetime
) -> list[Workout]:
    """The live mirrored activities the listing should have shown and did not, read
    before any is checked (a check rewrites rows the reading pages through). A sweep
    pages through every live row: `workouts_starting_between` stops at a read cap on
    DynamoDB, which a long history passes."""
    if report.sweep:
        rows: Iterable[Workout] = store.iter_workouts(report.user_id)
    else:
        rows = store.workouts_starting_between(report.user_id, report.since, listed_at)
    return [w for w in rows if w.activity_id not in listed and w.start_utc <= listed_at]


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
