"""How each condition of domain.conditions' catalogue is seen, with no Garmin and no
Strava request: from the store, the queue, the settings and this process's own notes.

`observe(store, sight, now=...)` answers what is wrong now (`observed`) and what was
looked at (`checked`, the (key, user) pairs): a condition this runner cannot see (the
Lambda maintenance function does not look at Garmin's state; the `sync` command does
not know whether a mirror should run) neither opens nor clears here
(domain.conditions.advance). `Sight` says what a runner looks at; `sync_sight`,
`mirror_sight` and `maintenance_sight` build those the hooks use
(entrypoints/telling.py).

How each key is seen:
- garmin.tokens_refused, strava.authorization_refused: the account's status, which the
  cycle sets when Garmin or Strava refuses (services/sync.py `_needs_human`).
- strava.app_inactive: the application's access in the store (domain.app_access).
- uploads.dead: the account's ledger entries that are `dead`.
- mirror.dead_letters: the local queue's dead letters, or the SQS dead-letter queue's
  depth on AWS (the maintenance function).
- webhook.subscription_unknown: no subscription id stored nor set, where a mirror is
  expected to run (services/status.py `webhook_status` says the same).
- garmin.backoff_long: the account's `garmin_backoff_since`, kept by the cycle from the
  first 429 of a spell to Garmin's next answer.
- garmin.network_refused: the account's `garmin_refused_since`, set by the cycle at
  Garmin's first 403 (list, download or token refresh) and cleared by its next answer.
- strava.unreachable: the outage the Strava adapter keeps (domain.strava_outage): failing
  for more than an hour of requests, which are made only while work waits.
- strava.budget_nearly_spent: the day's usage in the stored rate budget (domain.budget).
- store.unwritable: what this process met writing the store or the temporary directory,
  and the free space of their disks, looked at now (`Sight.disks`: under
  services/write_trouble.py's SPACE_FLOOR, or not to be looked at); in memory
  (services/write_trouble.py), since the store may be what is full.
- strava.athlete_capacity_exceeded: connected accounts against the setting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.budget import RateBudget
from garmin2strava.domain.conditions import Observation
from garmin2strava.domain.models import Account, AccountStatus, LedgerEntry, UploadOutcome
from garmin2strava.domain.strava_outage import STRAVA_OUTAGE_KEY, StravaOutage
from garmin2strava.ports import Accounts, AppState, EventQueue, StoreView, UploadLedger
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    subscription_from_state,
)
from garmin2strava.services.notify import KnownAppState, open_conditions
from garmin2strava.services.status import (
    DEFAULT_ATHLETE_CAPACITY,
    STRAVA_BUDGET_KEY,
    connected_accounts,
)
from garmin2strava.services.write_trouble import (
    WRITE_TROUBLE,
    Disk,
    WriteTrouble,
    free_bytes,
    look_at_space,
)

__all__ = [
    "ACCOUNT_KEYS",
    "BACKOFF_LONG",
    "BUDGET_SHARE",
    "OUTAGE_LONG",
    "ConditionStore",
    "DeadLetters",
    "LedgerGate",
    "Sight",
    "maintenance_sight",
    "mirror_sight",
    "observe",
    "queue_dead_letters",
    "sync_sight",
]

log = logging.getLogger(__name__)

Checked = set[tuple[str, str | None]]

BACKOFF_LONG = timedelta(hours=12)
OUTAGE_LONG = timedelta(hours=1)
BUDGET_SHARE = 0.9  # of the day's reads, or of the day's requests
_LEDGER_LIMIT = 3000  # as `status` reads it
_NAMED_RUNS = 5  # dead uploads named in one notification; the rest are counted

ACCOUNT_KEYS = (
    "garmin.tokens_refused",
    "strava.authorization_refused",
    "uploads.dead",
    "garmin.backoff_long",
    "garmin.network_refused",
)


class ConditionStore(Accounts, UploadLedger, AppState, Protocol):
    """What the observers read: accounts, their ledgers, the application-wide state."""


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Dead-lettered events as one source counts them; `oldest` None when unknown."""

    count: int
    oldest: datetime | None = None


class LedgerGate:
    """How often each account's ledger is read for dead uploads, where reading it
    costs (on DynamoDB the whole ledger is a Query of up to 3000 items): at most every
    `every`, per account and process. Between looks `uploads.dead` is not checked, so
    it neither opens nor clears; it is told at the next look."""

    def __init__(self, every: timedelta) -> None:
        self._every = every
        self._looked: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def due(self, user_id: str, now: datetime) -> bool:
        with self._lock:
            last = self._looked.get(user_id)
            if last is not None and timedelta(0) <= now - last < self._every:
                return False
            self._looked[user_id] = now
            return True


@dataclass(frozen=True, slots=True)
class Sight:
    """What one runner looks at when it observes."""

    # The four account keys, for every account (the runners that sync).
    accounts: bool
    athlete_capacity: int = DEFAULT_ATHLETE_CAPACITY
    # Where a mirror should run (`run` with its webhook, `serve`, AWS), a missing
    # subscription is a condition; elsewhere it is not looked at.
    mirror_expected: bool = False
    subscription_id_setting: int | None = None
    # How many events are dead-lettered, where this runner can tell (None: not looked at).
    dead_letters: Callable[[], DeadLetters] | None = None
    # This process's writes (store.unwritable); None for a runner that writes nothing
    # of its own (the maintenance function), so that it does not clear what another met.
    write_trouble: WriteTrouble | None = field(default=WRITE_TROUBLE)
    # None: every account's ledger is read at every look (SQLite: a local read).
    ledger_gate: LedgerGate | None = None
    # The directories this process writes, whose free space is looked at with its
    # writes (store.unwritable); none where write_trouble is None. `free` is how: the
    # operating system's figure (a statvfs), or a test's.
    disks: tuple[Disk, ...] = ()
    free: Callable[[Path], int] = free_bytes


def sync_sight(
    *,
    athlete_capacity: int,
    subscription_id_setting: int | None = None,
    queue: EventQueue | None = None,
    mirror_expected: bool = False,
    ledger_gate: LedgerGate | None = None,
    disks: Sequence[Disk] = (),
) -> Sight:
    """After a sync cycle (`run`, `sync`, the Lambda sync): every account, the app-wide
    state, this process's writes and the free space of `disks`; the local queue's dead
    letters when it has one."""
    return Sight(
        accounts=True,
        athlete_capacity=athlete_capacity,
        mirror_expected=mirror_expected,
        subscription_id_setting=subscription_id_setting,
        dead_letters=queue_dead_letters(queue) if queue is not None else None,
        ledger_gate=ledger_gate,
        disks=tuple(disks),
    )


def maintenance_sight(
    *,
    athlete_capacity: int,
    subscription_id_setting: int | None,
    dead_letter_depth: Callable[[], int] | None,
) -> Sight:
    """The Lambda maintenance function: the SQS dead-letter queue's depth, the
    subscription (the webhook always runs on AWS) and the app-wide state."""
    depth = dead_letter_depth
    return Sight(
        accounts=False,
        athlete_capacity=athlete_capacity,
        mirror_expected=True,
        subscription_id_setting=subscription_id_setting,
        dead_letters=(lambda: DeadLetters(depth())) if depth is not None else None,
        write_trouble=None,
    )


def mirror_sight(
    *, athlete_capacity: int, subscription_id_setting: int | None, queue: EventQueue
) -> Sight:
    """`serve` (the webhook and its worker, no sync): the queue's dead letters, the
    subscription and the app-wide state; no account, no writes of its own."""
    return Sight(
        accounts=False,
        athlete_capacity=athlete_capacity,
        mirror_expected=True,
        subscription_id_setting=subscription_id_setting,
        dead_letters=queue_dead_letters(queue),
        write_trouble=None,
    )


def queue_dead_letters(queue: EventQueue) -> Callable[[], DeadLetters]:
    def count() -> DeadLetters:
        dead = queue.list_dead(limit=100)
        return DeadLetters(len(dead), min((d.died_at for d in dead), default=None))

    return count


_GARMIN_SPELLS = frozenset({"garmin.backoff_long", "garmin.network_refused"})


def observe(
    store: ConditionStore, sight: Sight, *, now: datetime, view: StoreView | None = None
) -> tuple[list[Observation], Checked]:
    """The conditions seen now, and the (key, user) pairs looked at. `view`: the
    accounts and app-state items the invocation read at its start, not read again
    (the Lambda sync after idle cycles: its one read covers telling too)."""
    observed: list[Observation] = []
    checked: Checked = set()
    accounts = store.list_accounts() if view is None else list(view.accounts)
    app: AppState = store if view is None else KnownAppState(store, view.app_state)
    if sight.accounts:
        for account in accounts:
            ledger = sight.ledger_gate is None or sight.ledger_gate.due(account.user_id, now)
            keys = [k for k in ACCOUNT_KEYS if ledger or k != "uploads.dead"]
            if not account.enabled:  # paused: no request, so Garmin's spell neither goes
                keys = [k for k in keys if k not in _GARMIN_SPELLS]  # on nor ends
            checked.update((key, account.user_id) for key in keys)
            observed.extend(_account_observations(store, account, now, ledger=ledger))
        checked.update(_of_removed_accounts(app, {a.user_id for a in accounts}))
    for key, seen in _app_observations(app, sight, accounts, now):
        checked.add((key, None))
        if seen is not None:
            observed.append(seen)
    return observed, checked


def _of_removed_accounts(store: AppState, known: set[str]) -> set[tuple[str, str | None]]:
    """The open conditions of accounts removed since they opened: each ends with its
    account (looked at, and not seen)."""
    try:
        states = open_conditions(store)
    except Exception:  # noqa: BLE001 (telling reads the same item and says what is wrong)
        return set()
    return {(s.key, s.user_id) for s in states if s.user_id is not None and s.user_id not in known}


# -- one account -------------------------------------------------------------------------
def _account_observations(
    store: ConditionStore, account: Account, now: datetime, *, ledger: bool
) -> Iterable[Observation]:
    user = account.user_id
    if account.status is AccountStatus.NEEDS_GARMIN_LOGIN:
        yield Observation("garmin.tokens_refused", user, account.status_detail, now)
    if account.status is AccountStatus.NEEDS_STRAVA_AUTH:
        yield Observation("strava.authorization_refused", user, account.status_detail, now)
    since = account.garmin_backoff_since
    # A paused account makes no request: its spell neither goes on nor ends.
    if account.enabled and since is not None and now - since > BACKOFF_LONG:
        until = account.garmin_backoff_until
        detail = f"Next Garmin request after {until:%Y-%m-%d %H:%M} UTC." if until else ""
        yield Observation("garmin.backoff_long", user, detail, since)
    refused = account.garmin_refused_since
    if account.enabled and refused is not None:  # at once: no login can help
        until = account.garmin_refused_until
        detail = f"Next Garmin request after {until:%Y-%m-%d %H:%M} UTC." if until else ""
        yield Observation("garmin.network_refused", user, detail, refused)
    if not ledger:
        return
    dead = [
        e for e in store.list_uploads(user, limit=_LEDGER_LIMIT) if e.outcome is UploadOutcome.DEAD
    ]
    if dead:
        yield Observation("uploads.dead", user, _dead_runs(dead), min(e.updated_at for e in dead))


def _dead_runs(dead: Sequence[LedgerEntry]) -> str:
    """The runs by Garmin name and date (the ledger's words, no Strava data)."""
    named = [
        f"{e.activity_name or 'unnamed'} ({e.start_utc:%Y-%m-%d}, Garmin {e.garmin_activity_id})"
        if e.start_utc
        else f"{e.activity_name or 'unnamed'} (Garmin {e.garmin_activity_id})"
        for e in dead[:_NAMED_RUNS]
    ]
    more = f" and {len(dead) - _NAMED_RUNS} more" if len(dead) > _NAMED_RUNS else ""
    return f"Given up: {'; '.join(named)}{more}."


# -- the installation --------------------------------------------------------------------
def _app_observations(
    store: AppState, sight: Sight, accounts: Sequence[Account], now: datetime
) -> Iterable[tuple[str, Observation | None]]:
    """(key, what is seen or None) for each app-wide key this sight looks at."""
    access = StravaAppAccess.from_dict(store.get_app_state(APP_ACCESS_KEY))
    yield (
        "strava.app_inactive",
        _seen_if(
            access.inactive_since is not None,
            "strava.app_inactive",
            access.reason,
            access.inactive_since,
        ),
    )
    outage = StravaOutage.from_dict(store.get_app_state(STRAVA_OUTAGE_KEY))
    yield (
        "strava.unreachable",
        _seen_if(
            outage.failing and outage.lasted() >= OUTAGE_LONG.total_seconds(),
            "strava.unreachable",
            f"Last failure: {outage.reason} ({outage.failures} failed requests).",
            outage.since,
        ),
    )
    yield "strava.budget_nearly_spent", _budget(store, now)
    connected = len(connected_accounts(accounts))
    yield (
        "strava.athlete_capacity_exceeded",
        _seen_if(
            connected > sight.athlete_capacity,
            "strava.athlete_capacity_exceeded",
            f"{connected} connected accounts, capacity {sight.athlete_capacity}.",
            now,
        ),
    )
    if sight.write_trouble is not None:
        yield "store.unwritable", _unwritable(sight.write_trouble, sight, now)
    dead = _dead_letters(sight)
    if dead is not None:
        yield (
            "mirror.dead_letters",
            _seen_if(
                dead.count > 0,
                "mirror.dead_letters",
                f"{dead.count}{'+' if dead.count >= 100 else ''} dead-lettered events.",  # noqa: PLR2004 (list_dead's limit)
                dead.oldest or now,
            ),
        )
    if sight.mirror_expected:
        yield "webhook.subscription_unknown", _subscription(store, sight, now)


def _dead_letters(sight: Sight) -> DeadLetters | None:
    """None when not looked at, or when the queue cannot say (SQS down): not checked."""
    if sight.dead_letters is None:
        return None
    try:
        return sight.dead_letters()
    except Exception as exc:  # noqa: BLE001 (any failure: the key waits for a later look)
        log.warning("conditions.dead_letters_unknown", extra={"error": type(exc).__name__})
        return None


def _seen_if(holds: bool, key: str, detail: str, since: datetime | None) -> Observation | None:
    if not holds or since is None:
        return None
    return Observation(key, None, detail, since)


def _budget(store: AppState, now: datetime) -> Observation | None:
    usage = RateBudget.from_dict(store.get_app_state(STRAVA_BUDGET_KEY)).usage(now)
    spent = [
        f"{used} of {limit} {what}"
        for what, (used, limit) in (("requests", usage["daily"]), ("reads", usage["read_daily"]))
        if limit > 0 and used >= BUDGET_SHARE * limit
    ]
    if not spent:
        return None
    return Observation("strava.budget_nearly_spent", None, f"Today: {', '.join(spent)}.", now)


def _unwritable(trouble: WriteTrouble, sight: Sight, now: datetime) -> Observation | None:
    if sight.disks:  # a statvfs each: nothing read, nothing written
        look_at_space(trouble, sight.disks, now, free=sight.free)
    current = trouble.current()
    if not current:
        return None
    places = {"store": "the store", "temp": "the temporary directory", "space": "free space"}
    detail = "; ".join(f"{places[p]}: {t.detail}" for p, t in sorted(current.items()))
    return Observation("store.unwritable", None, detail, min(t.since for t in current.values()))


def _subscription(store: AppState, sight: Sight, now: datetime) -> Observation | None:
    if sight.subscription_id_setting is not None:
        return None
    if subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY)) is not None:
        return None
    return Observation("webhook.subscription_unknown", None, "", now)
