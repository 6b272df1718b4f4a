"""Telling the owner (README "Being told"): each condition's notice goes out once when
it starts and once when it clears, however many cycles, processes, restarts or Lambda
invocations it lasts.

What was told lives in the store, in one AppState item (NOTIFY_STATE_KEY), on SQLite
and DynamoDB alike. One runner at a time tells: it takes the NOTIFY_LEASE lease (the
conditional write that also guards each account's sync), reads the states, advances
them with what its caller observed (domain/conditions.py `advance`), sends what is
owed, records each delivery before the next, and releases. A SIGKILL between a send and
its record may repeat that one notice: at least once, never lost. A start whose
delivery failed may still have arrived (an endpoint that answered after the channel's
time ran out), so once its start was tried a condition's clearing is always told.

A delivery never fails or holds up its caller: the channel bounds each attempt, a call
makes at most one attempt per notice and starts none once SEND_BUDGET_S is spent (what
is left stays owed for the next call), and no error of the store or the channel leaves
`tell`. When the store cannot be written (the disk is full), the states are kept in
this process's memory instead: each notice is then told once per process, and written
to the store when it can be written again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from garmin2strava.domain.conditions import (
    CONDITIONS,
    ConditionState,
    Notice,
    Observation,
    advance,
    delivered,
    state_id,
    tried,
)
from garmin2strava.domain.models import Account, AuditEvent
from garmin2strava.ports import AppState, AuditLog, NotifyChannel, SyncLeases

__all__ = [
    "NOTIFY_LEASE",
    "NOTIFY_STATE_KEY",
    "SEND_BUDGET_S",
    "NotifyStore",
    "TellReport",
    "open_conditions",
    "tell",
]

log = logging.getLogger(__name__)

NOTIFY_STATE_KEY = "notify.conditions"
# The lease's "account": `~` is outside G2S_USER_ID's characters, so no account has it.
NOTIFY_LEASE = "~notify"
# Longer than a call can last (SEND_BUDGET_S plus one attempt): a runner that died
# holding it delays the others by this much at most.
LEASE_TTL_S = 120
# No new attempt once a call has spent this long sending: a channel that hangs costs a
# call about one attempt (the channel's own timeout), however many notices are owed.
SEND_BUDGET_S = 10.0
AUDIT_KIND = "notify.sent"


class NotifyStore(AppState, SyncLeases, AuditLog, Protocol):
    """What telling needs of the store: the states, the lease, the audit trail, and
    the accounts an app-wide notification is audited for."""

    def list_accounts(self) -> list[Account]: ...


@dataclass(frozen=True, slots=True)
class TellReport:
    """`sent`: delivered by this call (with no channel: counted as told); `owed`: left
    for a later call (the channel failed, or the call was out of time); `busy`: another
    runner was telling, this call did nothing; `from_memory`: the store could not be
    written, the states are in this process's memory."""

    sent: tuple[Notice, ...] = ()
    owed: tuple[Notice, ...] = ()
    busy: bool = False
    from_memory: bool = False


class KnownAppState:
    """ports.AppState that answers reads from what was read already (an invocation's
    StoreView) for the keys it holds, and from the store otherwise; writes go to the
    store. For reads that need not be fresher than the invocation's start: never the
    reads under the `~notify` lease."""

    def __init__(self, store: AppState, known: Mapping[str, dict[str, Any] | None]) -> None:
        self._store = store
        self._known = dict(known)

    def get_app_state(self, key: str) -> dict[str, Any] | None:
        if key in self._known:
            value = self._known[key]
            return None if value is None else dict(value)
        return self._store.get_app_state(key)

    def put_app_state(self, key: str, value: dict[str, Any]) -> None:
        self._known.pop(key, None)
        self._store.put_app_state(key, value)


def open_conditions(store: AppState) -> list[ConditionState]:
    """The conditions open now, oldest first (status, the status page, /healthz)."""
    states = _read(store)
    return sorted((s for s in states.values() if s.open), key=lambda s: (s.since, s.key))


def tell(
    store: NotifyStore,
    channel: NotifyChannel | None,
    observed: Sequence[Observation],
    checked: Collection[tuple[str, str | None]],
    *,
    now: datetime,
    owner: str,
    retention_days: int = 7,
    known: AppState | None = None,
) -> TellReport:
    """Advance the states with what was observed (`checked`: what was looked at) and
    send what is owed. With no channel configured, notices count as told: the states
    still track what is open, for `status`. `known`: where the idle check reads the
    states (KnownAppState: the invocation's one read); the work under the lease reads
    the store. Never raises."""
    try:
        return _tell(
            store,
            channel,
            observed,
            checked,
            now=now,
            owner=owner,
            retention_days=retention_days,
            known=known,
        )
    except Exception as exc:  # noqa: BLE001 (a bug, not weather: never raised into a cycle)
        # Its class only, no traceback: an error's text may quote a URL.
        log.error("notify.tell_failed", extra={"error": type(exc).__name__})  # noqa: TRY400
        return TellReport()


def _tell(
    store: NotifyStore,
    channel: NotifyChannel | None,
    observed: Sequence[Observation],
    checked: Collection[tuple[str, str | None]],
    *,
    now: datetime,
    owner: str,
    retention_days: int,
    known: AppState | None,
) -> TellReport:
    memory = _memory_of(store)
    if memory.states is None and _nothing_to_do(known or store, observed, checked, now):
        return TellReport()  # an idle cycle: one read, no write
    if not memory.lock.acquire(blocking=False):  # another thread of ours is telling
        return TellReport(busy=True)
    try:
        leased = _take_lease(store, owner, now)
        if leased is False:
            return TellReport(busy=True)
        try:
            book = _open_book(store, memory, writable=leased is True)
            book.states, notices = advance(book.states, observed, checked, now)
            sent, owed = _send(book, channel, notices, now)
            book.keep()
            if channel is not None and sent:
                _audit(store, sent, now, retention_days)
            return TellReport(tuple(sent), tuple(owed), from_memory=book.store is None)
        finally:
            if leased:
                _release_lease(store, owner)
    finally:
        memory.lock.release()


def _nothing_to_do(
    store: AppState,
    observed: Sequence[Observation],
    checked: Collection[tuple[str, str | None]],
    now: datetime,
) -> bool:
    """True when the stored states would neither change nor owe a notice (read without
    the lease: the call that finds work takes it and reads again)."""
    try:
        states = _read(store)
    except Exception:  # noqa: BLE001 (the full path says what is wrong)
        return False
    after, notices = advance(states, observed, checked, now)
    return not notices and after == states


# -- where the states are kept ----------------------------------------------------------
@dataclass
class _Memory:
    """This process's copy of the states while the store cannot be written (None: the
    store holds them), and the lock that lets one thread of the process tell at once."""

    states: dict[str, ConditionState] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


# One per store object: a process has one (the daemon's, a Lambda's cold start).
_MEMORIES: weakref.WeakKeyDictionary[object, _Memory] = weakref.WeakKeyDictionary()
_MEMORIES_LOCK = threading.Lock()


def _memory_of(store: object) -> _Memory:
    with _MEMORIES_LOCK:
        try:
            memory = _MEMORIES.get(store)
            if memory is None:
                memory = _MEMORIES[store] = _Memory()
        except TypeError:  # a store that takes no weak reference: memory for this call
            return _Memory()
        return memory


@dataclass
class _Book:
    """The states being told, and where they are kept: the store, or (`store` None)
    this process's memory."""

    states: dict[str, ConditionState]
    store: AppState | None
    memory: _Memory

    def keep(self) -> None:
        if self.store is not None:
            try:
                _write(self.store, self.states)
            except Exception as exc:  # noqa: BLE001 (any store's error: the disk is full, the table unreachable)
                log.warning("notify.store_unwritable", extra={"error": type(exc).__name__})
                self.store = None
            else:
                self.memory.states = None
                return
        self.memory.states = dict(self.states)


def _open_book(store: AppState, memory: _Memory, *, writable: bool) -> _Book:
    """The states to advance: memory's when it has them (what this process told while
    the store could not be written), else the store's. A store that cannot be written
    (its lease refused the write: the disk is full) is still read, so what it says was
    told is not told again; the states then live in memory until it can be written."""
    keep_in = store if writable else None
    if memory.states is not None:
        return _Book(dict(memory.states), keep_in, memory)
    try:
        return _Book(_read(store), keep_in, memory)
    except Exception as exc:  # noqa: BLE001 (as in keep)
        log.warning("notify.store_unreadable", extra={"error": type(exc).__name__})
        return _Book({}, None, memory)


def _read(store: AppState) -> dict[str, ConditionState]:
    """The stored states (none in a store from before notifications); an entry that
    does not read is skipped, not fatal."""
    value = store.get_app_state(NOTIFY_STATE_KEY) or {}
    raw = value.get("states")
    states: dict[str, ConditionState] = {}
    for entry in raw.values() if isinstance(raw, dict) else ():
        try:
            state = ConditionState.from_dict(entry)
        except (KeyError, TypeError, ValueError):
            log.warning("notify.state_unreadable")
            continue
        if state.key in CONDITIONS:  # a key a later version dropped: forgotten
            states[state_id(state.key, state.user_id)] = state
    return states


def _write(store: AppState, states: dict[str, ConditionState]) -> None:
    body: dict[str, Any] = {"states": {sid: s.to_dict() for sid, s in states.items()}}
    store.put_app_state(NOTIFY_STATE_KEY, body)


def _take_lease(store: SyncLeases, owner: str, now: datetime) -> bool | None:
    """True: ours; False: another runner's; None: the store cannot be written."""
    try:
        return store.acquire_lease(NOTIFY_LEASE, owner, now=now, ttl_seconds=LEASE_TTL_S)
    except Exception as exc:  # noqa: BLE001 (as in keep)
        log.warning("notify.store_unwritable", extra={"error": type(exc).__name__})
        return None


def _release_lease(store: SyncLeases, owner: str) -> None:
    try:
        store.release_lease(NOTIFY_LEASE, owner)
    except Exception as exc:  # noqa: BLE001 (it expires by itself)
        log.warning("notify.lease_not_released", extra={"error": type(exc).__name__})


# -- sending ---------------------------------------------------------------------------
def _send(
    book: _Book, channel: NotifyChannel | None, notices: Sequence[Notice], now: datetime
) -> tuple[list[Notice], list[Notice]]:
    """One attempt per notice at most, none after SEND_BUDGET_S; each delivery is
    recorded before the next attempt."""
    started = time.monotonic()
    sent: list[Notice] = []
    owed: list[Notice] = []
    for notice in notices:
        if channel is not None and time.monotonic() - started >= SEND_BUDGET_S:
            owed.append(notice)
            continue
        if channel is not None and not _attempt(channel, notice):
            log.warning("notify.owed", extra=_fields(notice))
            book.states = tried(book.states, notice, now)  # it may have arrived all the same
            owed.append(notice)
            continue
        book.states = delivered(book.states, notice, now)
        if channel is not None:
            book.keep()
            log.info("notify.sent", extra=_fields(notice))
        sent.append(notice)
    return sent, owed


def _attempt(channel: NotifyChannel, notice: Notice) -> bool:
    try:
        return channel.send(notice.title, notice.body, notice.notify_type)
    except Exception as exc:  # noqa: BLE001 (a channel must not raise; if one does, it failed)
        log.warning("notify.channel_raised", extra={"error": type(exc).__name__})
        return False


def _fields(notice: Notice) -> dict[str, Any]:
    return {"key": notice.state.key, "userId": notice.state.user_id, "kind": str(notice.kind)}


def _audit(store: NotifyStore, sent: Sequence[Notice], now: datetime, retention_days: int) -> None:
    """`history` shows each notification: on its account, or on every account for an
    app-wide one."""
    try:
        everyone: list[str] | None = None
        for notice in sent:
            user = notice.state.user_id
            if user is None and everyone is None:
                everyone = [account.user_id for account in store.list_accounts()]
            for user_id in [user] if user is not None else everyone or []:
                event = AuditEvent(
                    user_id=user_id,
                    at=now,
                    kind=AUDIT_KIND,
                    event_id=uuid.uuid4().hex,
                    detail=_fields(notice),
                )
                store.add_audit(event, retention_days=retention_days)
    except Exception as exc:  # noqa: BLE001 (the notification went out; only its trace is lost)
        log.warning("notify.audit_failed", extra={"error": type(exc).__name__})
