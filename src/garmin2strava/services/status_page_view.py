"""What the status page shows, read from the store and the webhook queue: the
accounts with their state and why, each Garmin run of the last 30 days with its
outcome, the Strava budget, the queue and the dead letters. No HTML here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.budget import RateBudget, next_day_reset, next_window_reset
from garmin2strava.domain.models import Account, AccountStatus, LedgerEntry, UploadOutcome
from garmin2strava.domain.webhook import DeadEvent
from garmin2strava.ports import EventQueue, Store
from garmin2strava.services.account_control import paused_reason_of
from garmin2strava.services.status import STRAVA_BUDGET_KEY, open_conditions_status

__all__ = [
    "KINDS",
    "AccountView",
    "Gauge",
    "RunMark",
    "StatusPageView",
    "build_view",
    "kind_of",
]

STRAVA_ACTIVITY_URL = "https://www.strava.com/activities/{}"

# The time line's colour classes, in legend order, and the ledger outcomes in each.
KINDS: tuple[str, ...] = ("uploaded", "matched", "skipped", "failed", "dead", "pending")
_KIND_OF = {
    UploadOutcome.UPLOADED: "uploaded",
    UploadOutcome.EXISTS: "matched",
    UploadOutcome.DUPLICATE: "matched",
    UploadOutcome.SKIPPED: "skipped",
    UploadOutcome.FAILED: "failed",
    UploadOutcome.DEAD: "dead",
    UploadOutcome.PENDING: "pending",
    UploadOutcome.PROCESSING: "pending",
}


def kind_of(outcome: UploadOutcome) -> str:
    return _KIND_OF[outcome]


@dataclass(frozen=True, slots=True)
class AccountView:
    user_id: str
    state: str  # "active", "paused", or the account status
    why: str
    paused: bool
    last_cycle_at: datetime | None
    last_cycle_ok: bool | None
    last_summary: dict[str, int]
    next_cycle: str
    athlete_id: int | None


@dataclass(frozen=True, slots=True)
class RunMark:
    """One Garmin run on the time line: `x` is its place in the window, 0 to 1."""

    user_id: str
    garmin_id: int
    name: str
    start: datetime
    outcome: str  # the ledger's
    kind: str  # the colour class (KINDS)
    reason: str
    strava_id: int | None
    x: float
    finish: str = ""  # gear set, hidden, name carried (StravaFinish.summary)

    @property
    def strava_url(self) -> str | None:
        return None if self.strava_id is None else STRAVA_ACTIVITY_URL.format(self.strava_id)


@dataclass(frozen=True, slots=True)
class Gauge:
    label: str
    used: int
    limit: int
    resets_at: datetime

    @property
    def fraction(self) -> float:
        return 0.0 if self.limit <= 0 else min(1.0, self.used / self.limit)


@dataclass(frozen=True, slots=True)
class StatusPageView:
    now: datetime
    window_start: datetime
    days: int
    accounts: list[AccountView]
    marks: list[RunMark]
    counts: dict[str, int]  # marks per kind
    gauges: list[Gauge]
    budget_blocked_until: datetime | None
    app_inactive: StravaAppAccess | None  # Strava refuses the application itself
    queue_depth: int | None  # None: no queue in this process
    oldest_event_age_s: float | None
    dead_events: list[DeadEvent]
    dead_uploads: list[LedgerEntry]
    # What needs a person (README "Being told"): open conditions, oldest first.
    conditions: list[dict[str, Any]] = field(default_factory=list)


def build_view(
    store: Store,
    queue: EventQueue | None,
    *,
    now: datetime,
    interval_s: int | None,
    days: int = 30,
) -> StatusPageView:
    """The page's data. `interval_s`: the scheduler's interval (None: no scheduler in
    this process). Reads: the account list, each account's ledger for the window
    (newest first, bounded), the budget item, and the queue."""
    start = now - timedelta(days=days)
    accounts = store.list_accounts()
    marks: list[RunMark] = []
    dead_uploads: list[LedgerEntry] = []
    for account in accounts:
        for entry in _entries_since(store, account.user_id, start):
            marks.append(_mark(entry, start, now))
            if entry.outcome is UploadOutcome.DEAD:
                dead_uploads.append(entry)
    marks.sort(key=lambda m: m.start, reverse=True)
    counts = {kind: sum(m.kind == kind for m in marks) for kind in KINDS}
    budget = RateBudget.from_dict(store.get_app_state(STRAVA_BUDGET_KEY))
    access = StravaAppAccess.from_dict(store.get_app_state(APP_ACCESS_KEY))
    return StatusPageView(
        now=now,
        window_start=start,
        days=days,
        accounts=[_account_view(a, now, interval_s) for a in accounts],
        marks=marks,
        counts=counts,
        gauges=_gauges(budget, now),
        budget_blocked_until=budget.blocked_until
        if budget.blocked_until and budget.blocked_until > now
        else None,
        app_inactive=access if access.inactive else None,
        queue_depth=None if queue is None else queue.depth(),
        oldest_event_age_s=None if queue is None else queue.oldest_age(now=now),
        dead_events=[] if queue is None else queue.list_dead(limit=50),
        dead_uploads=dead_uploads,
        conditions=open_conditions_status(store),
    )


def _entries_since(store: Store, user_id: str, start: datetime) -> Sequence[LedgerEntry]:
    # Newest start first, so the window is a prefix of the list.
    entries = store.list_uploads(user_id, limit=1000)
    return [e for e in entries if e.start_utc is not None and e.start_utc >= start]


def _mark(entry: LedgerEntry, start: datetime, now: datetime) -> RunMark:
    assert entry.start_utc is not None
    span = (now - start).total_seconds()
    x = (entry.start_utc - start).total_seconds() / span if span > 0 else 1.0
    return RunMark(
        user_id=entry.user_id,
        garmin_id=entry.garmin_activity_id,
        name=entry.activity_name or f"Garmin activity {entry.garmin_activity_id}",
        start=entry.start_utc,
        outcome=entry.outcome.value,
        kind=kind_of(entry.outcome),
        reason=entry.detail,
        strava_id=entry.strava_activity_id,
        x=min(1.0, max(0.0, x)),
        finish=entry.finish.summary() if entry.finish is not None else "",
    )


def _account_view(account: Account, now: datetime, interval_s: int | None) -> AccountView:
    paused = not account.enabled
    if paused:
        state, why, next_cycle = "paused", paused_reason_of(account), "none until resumed"
    elif account.status is not AccountStatus.ACTIVE:
        state, why = account.status.value, account.status_detail
        next_cycle = "none until fixed"
    elif account.garmin_backoff_until and account.garmin_backoff_until > now:
        until = account.garmin_backoff_until
        state = "active"
        why = f"Garmin answered 429: backing off until {until:%Y-%m-%d %H:%M} UTC"
        next_cycle = f"{until:%Y-%m-%d %H:%M:%S} UTC"
    elif account.garmin_refused_until and account.garmin_refused_until > now:
        until = account.garmin_refused_until
        state = "active"
        why = (
            f"Garmin answered 403 (it refuses this network): backing off until "
            f"{until:%Y-%m-%d %H:%M} UTC; another network or G2S_GARMIN_PROXY helps"
        )
        next_cycle = f"{until:%Y-%m-%d %H:%M:%S} UTC"
    else:
        state = "active"
        why = "syncing" if account.last_cycle_ok is not False else "the last cycle failed"
        next_cycle = _next_cycle(account, now, interval_s)
    return AccountView(
        user_id=account.user_id,
        state=state,
        why=why,
        paused=paused,
        last_cycle_at=account.last_cycle_at,
        last_cycle_ok=account.last_cycle_ok,
        last_summary=dict(account.last_cycle_summary),
        next_cycle=next_cycle,
        athlete_id=account.strava_athlete_id,
    )


def _next_cycle(account: Account, now: datetime, interval_s: int | None) -> str:
    if interval_s is None:
        return "by the scheduler of the process that syncs"
    if account.last_cycle_at is None:
        return "at the next tick"
    due = max(now, account.last_cycle_at + timedelta(seconds=interval_s))
    return f"{due:%Y-%m-%d %H:%M:%S} UTC"


def _gauges(budget: RateBudget, now: datetime) -> list[Gauge]:
    usage = budget.usage(now)
    window, day = next_window_reset(now), next_day_reset(now)
    return [
        Gauge("15 minutes, all requests", *usage["short"], window),
        Gauge("15 minutes, reads", *usage["read_short"], window),
        Gauge("daily, all requests", *usage["daily"], day),
        Gauge("daily, reads", *usage["read_daily"], day),
    ]
