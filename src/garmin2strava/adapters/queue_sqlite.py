"""The webhook event queue in the store's SQLite file (the container's EventQueue).

A table of its own beside the store's, WAL with synchronous=FULL. Claims are leases
taken inside BEGIN IMMEDIATE; a claimant that provably died (its flock on a file in
`<db file>.claimants/` is free) gives its claims back at once. Enqueues are
group-committed and wait at most `enqueue_timeout_ms`. `claim` also prunes old rows
and buries an event whose claims keep lapsing; the dead letters are bounded.
docs/architecture.md, "The webhook queue on SQLite", says why each of these is so.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from garmin2strava.adapters.queue_claimants import Claimant
from garmin2strava.domain.webhook import DeadEvent, QueuedEvent, WebhookEvent
from garmin2strava.errors import TransientError

__all__ = [
    "DEFAULT_DEAD_RETENTION",
    "DEFAULT_DONE_RETENTION",
    "DEFAULT_MAX_DEAD",
    "DEFAULT_MAX_UNSETTLED_CLAIMS",
    "SqliteEventQueue",
]

log = logging.getLogger(__name__)

DEFAULT_DONE_RETENTION = timedelta(days=1)  # Strava redelivers within minutes
DEFAULT_MAX_UNSETTLED_CLAIMS = 5
DEFAULT_DEAD_RETENTION = timedelta(days=30)  # time enough to notice and retry them
DEFAULT_MAX_DEAD = 10_000  # about 3 MB of rows
_PRUNE_EVERY_S = 3600.0  # monotonic seconds between two prunes of one instance
_PRUNE_BATCH = 1000  # rows deleted per transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_queue (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key    TEXT    NOT NULL UNIQUE,
    object_key    TEXT    NOT NULL,
    event_json    TEXT    NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'pending',  -- pending | done | dead
    attempts      INTEGER NOT NULL DEFAULT 0,          -- failed attempts
    claims        INTEGER NOT NULL DEFAULT 0,          -- times handed to a worker
    lapsed_claims INTEGER NOT NULL DEFAULT 0,          -- claims whose lease ran out unsettled
    available_at  REAL    NOT NULL,                    -- epoch s; a claim pushes it ahead
    claim_token   TEXT,
    claimed_by    TEXT,                                -- the claimant's lock file name
    enqueued_at   REAL    NOT NULL,
    finished_at   REAL,
    last_error    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS webhook_queue_ready ON webhook_queue (state, available_at);
CREATE INDEX IF NOT EXISTS webhook_queue_object ON webhook_queue (object_key, state);
"""
# Files created before the reclaim cap lack the column (ADD COLUMN with a constant
# default rewrites nothing).
_ADD_LAPSED_CLAIMS = "ALTER TABLE webhook_queue ADD COLUMN lapsed_claims INTEGER NOT NULL DEFAULT 0"
_ADD_CLAIMED_BY = "ALTER TABLE webhook_queue ADD COLUMN claimed_by TEXT"
_ADDED_COLUMNS = {"lapsed_claims": _ADD_LAPSED_CLAIMS, "claimed_by": _ADD_CLAIMED_BY}


# Settling statements. `claim_token = ?` makes a worker whose claim expired (and was
# taken by another) unable to settle events it no longer owns.
_COMPLETE = (
    "UPDATE webhook_queue SET state = 'done', claim_token = NULL, finished_at = ?"
    " WHERE id = ? AND claim_token = ?"
)
_RELEASE = (
    "UPDATE webhook_queue SET claim_token = NULL, available_at = ? WHERE id = ? AND claim_token = ?"
)
_FAIL = (
    "UPDATE webhook_queue SET claim_token = NULL, available_at = ?,"
    " attempts = attempts + 1, last_error = ? WHERE id = ? AND claim_token = ?"
)
_DEAD = (
    "UPDATE webhook_queue SET state = 'dead', claim_token = NULL,"
    " attempts = attempts + 1, finished_at = ?, last_error = ? WHERE id = ? AND claim_token = ?"
)

# Claim statements. A pending row that still has a token once its lease is over was
# claimed and never settled (every settlement clears the token): that claim lapsed.
_BURY_UNSETTLED = (
    "UPDATE webhook_queue SET state = 'dead', claim_token = NULL, finished_at = ?,"
    " lapsed_claims = lapsed_claims + 1, last_error = 'claimed ' || (lapsed_claims + 1)"
    " || ' times without being settled (the worker died holding it)'"
    " WHERE state = 'pending' AND claim_token IS NOT NULL AND available_at <= ?"
    " AND lapsed_claims + 1 >= ?"
)
# Objects with a ready event and no live claim by another worker (a live claim is a row
# with a token whose lease has not run out), those with a lapsed claim first.
_READY_OBJECTS = (
    "SELECT object_key, MAX(claim_token IS NOT NULL) FROM webhook_queue"
    " WHERE state = 'pending' AND available_at <= ?"
    " AND object_key NOT IN (SELECT object_key FROM webhook_queue"
    "   WHERE state = 'pending' AND claim_token IS NOT NULL"
    "   AND available_at > ?)"
    " GROUP BY object_key ORDER BY MAX(claim_token IS NOT NULL) DESC, MIN(id) LIMIT ?"
)
# SET expressions read the row as it was: `claim_token IS NOT NULL` is the old token.
_TAKE = (
    "UPDATE webhook_queue SET claim_token = ?, claimed_by = ?, available_at = ?,"
    " claims = claims + 1,"
    " lapsed_claims = lapsed_claims + (claim_token IS NOT NULL)"
    " WHERE state = 'pending' AND available_at <= ?"
    " AND object_key IN (SELECT value FROM json_each(?))"
)
# Claimants of other live leases, to be checked for a dead process.
_OTHER_CLAIMANTS = (
    "SELECT DISTINCT claimed_by FROM webhook_queue"
    " WHERE state = 'pending' AND claim_token IS NOT NULL AND available_at > ?"
    " AND claimed_by IS NOT NULL AND claimed_by != ?"
)
# A dead claimant's leases end now; the token stays, so the next take counts the lapse.
_END_LEASES = (
    "UPDATE webhook_queue SET available_at = ?"
    " WHERE state = 'pending' AND claim_token IS NOT NULL AND available_at > ? AND claimed_by = ?"
)
# No ORDER BY: the scan stops at the first `_PRUNE_BATCH` matches.
_PRUNE_SOME = (
    "DELETE FROM webhook_queue WHERE id IN (SELECT id FROM webhook_queue"
    " WHERE state = 'done' AND finished_at < ? LIMIT ?)"
)
_PRUNE_DEAD_SOME = (
    "DELETE FROM webhook_queue WHERE id IN (SELECT id FROM webhook_queue"
    " WHERE state = 'dead' AND finished_at < ? LIMIT ?)"
)
# The oldest dead letters beyond the bound (parameter: the bound).
_DROP_DEAD_OVER_BOUND = (
    "DELETE FROM webhook_queue WHERE id IN (SELECT id FROM webhook_queue"
    " WHERE state = 'dead' ORDER BY finished_at, id LIMIT max(0,"
    " (SELECT COUNT(*) FROM webhook_queue WHERE state = 'dead') - ?))"
)


class SqliteEventQueue:
    """EventQueue over one SQLite file; safe across threads and processes.

    `done_retention`: how long a finished event (and its dedupe key) is kept.
    `max_unsettled_claims`: claims an event may take without being settled before the
    next claim makes it dead. `monotonic`: the clock that spaces the prunes an hour
    apart (injectable for tests); the prune's cutoff comes from `claim`'s `now`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_ms: int = 10_000,
        enqueue_timeout_ms: int | None = None,
        done_retention: timedelta = DEFAULT_DONE_RETENTION,
        max_unsettled_claims: int = DEFAULT_MAX_UNSETTLED_CLAIMS,
        monotonic: Callable[[], float] = time.monotonic,
        dead_retention: timedelta = DEFAULT_DEAD_RETENTION,
        max_dead: int = DEFAULT_MAX_DEAD,
    ) -> None:
        if done_retention <= timedelta(0) or dead_retention <= timedelta(0):
            raise ValueError("done_retention and dead_retention must be positive")
        if max_dead < 1:
            raise ValueError("max_dead must be at least 1")
        self._dead_retention = dead_retention
        self._max_dead = int(max_dead)
        if max_unsettled_claims < 1:
            raise ValueError("max_unsettled_claims must be at least 1")
        self._done_retention = done_retention
        self._max_unsettled_claims = int(max_unsettled_claims)
        self._monotonic = monotonic
        self._next_prune = float("-inf")  # the first claim prunes
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per instance behind a lock; other processes have their own.
        self._lock = threading.Lock()
        # Enqueues waiting for the next group commit (see `enqueue`).
        self._waiting_lock = threading.Lock()
        self._waiting: list[_Enqueue] = []
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._enqueue_timeout_s = (
            busy_timeout_ms if enqueue_timeout_ms is None else enqueue_timeout_ms
        ) / 1000
        self._db = sqlite3.connect(
            self._path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # executescript commits on its own, so it runs outside `_transaction`.
        with self._lock:
            self._db.executescript(_SCHEMA)
            if self._missing_columns():
                with self._transaction_held() as db:
                    for column in self._missing_columns():  # another process may add some
                        db.execute(_ADDED_COLUMNS[column])
        self._claimant = Claimant(self._path.with_name(self._path.name + ".claimants"))

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._claimant.release()  # our claims, if any, are anyone's to take at once

    # -- producer ------------------------------------------------------------------
    def enqueue(self, event: WebhookEvent, *, now: datetime) -> bool:
        """Group commit: the caller that gets the connection writes every enqueue
        waiting at that moment in one transaction, and each caller returns once the
        commit holding its row is done. A backlog built up behind a slow commit (or
        a worker's transaction) is then cleared by one commit, not one each."""
        ts = now.timestamp()
        deadline = time.monotonic() + self._enqueue_timeout_s
        mine = _Enqueue((event.dedupe_key, event.object_key, event.to_json(), ts, ts))
        with self._waiting_lock:
            self._waiting.append(mine)
        if not self._lock.acquire(timeout=self._enqueue_timeout_s):
            with self._waiting_lock:
                gave_up = mine in self._waiting
                if gave_up:
                    self._waiting.remove(mine)
            if gave_up:
                raise TransientError(_BUSY)
            # An enqueue holding the lock took ours into its commit, which ends by
            # its own deadline: wait for it.
            self._lock.acquire()
        try:
            if not mine.settled:  # no earlier caller took it into its commit
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                self._insert(batch, deadline)
        finally:
            self._lock.release()
        if mine.error is not None:
            if _busy(mine.error):
                raise TransientError(_BUSY) from None
            raise mine.error
        return mine.new

    def _insert(self, batch: list[_Enqueue], deadline: float) -> None:
        """Under `_lock`: one transaction for the batch; every member learns how it
        ended (a failure fails them all, and nothing of the batch is kept)."""
        try:
            with self._transaction_held(deadline) as db:
                for item in batch:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO webhook_queue"
                        " (dedupe_key, object_key, event_json, available_at, enqueued_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        item.row,
                    )
                    item.new = cur.rowcount == 1
        except Exception as exc:  # noqa: BLE001 (handed to every caller of the batch)
            for item in batch:
                item.new, item.error = False, exc
        for item in batch:
            item.settled = True

    # -- consumer ------------------------------------------------------------------
    def claim(
        self, *, now: datetime, limit: int = 50, visibility_seconds: float = 60.0
    ) -> list[list[QueuedEvent]]:
        self._prune_if_due(now)
        me = self._claimant.acquire()
        ts = now.timestamp()
        token = uuid.uuid4().hex
        rows: list[tuple[object, ...]] = []
        with self._transaction() as db:
            taken_over = self._end_leases_of_dead_claimants(db, ts, me)
            buried = db.execute(_BURY_UNSETTLED, (ts, ts, self._max_unsettled_claims)).rowcount
            ready = db.execute(_READY_OBJECTS, (ts, ts, limit)).fetchall()
            # A group whose last claim lapsed may be what kills the worker: it goes out
            # alone, so that its next lapse is charged to it and to nothing beside it.
            keys = [str(ready[0][0])] if ready and ready[0][1] else [str(r[0]) for r in ready]
            if keys:
                db.execute(
                    _TAKE, (token, me or None, ts + visibility_seconds, ts, json.dumps(keys))
                )
                rows = db.execute(
                    "SELECT id, event_json, attempts, enqueued_at, claim_token, last_error,"
                    " object_key FROM webhook_queue WHERE claim_token = ? ORDER BY id",
                    (token,),
                ).fetchall()
        if taken_over:
            log.warning("queue.dead_claimant", extra={"events": taken_over})
        if buried:
            log.error(
                "queue.dead_unsettled",
                extra={"events": buried, "maxUnsettledClaims": self._max_unsettled_claims},
            )
        groups: dict[str, list[QueuedEvent]] = {key: [] for key in keys}
        for row in rows:
            groups[str(row[-1])].append(_queued(row[:-1]))
        for group in groups.values():
            group.sort(key=lambda q: (q.event.event_time, q.queue_id))
        return [group for group in groups.values() if group]

    def complete(self, records: Sequence[QueuedEvent], *, now: datetime) -> None:
        self._settle(records, _COMPLETE, (now.timestamp(),))

    def release(self, records: Sequence[QueuedEvent], *, available_at: datetime) -> None:
        self._settle(records, _RELEASE, (available_at.timestamp(),))

    def fail(self, records: Sequence[QueuedEvent], *, retry_at: datetime, error: str) -> None:
        self._settle(records, _FAIL, (retry_at.timestamp(), error[:1000]))

    def dead_letter(self, records: Sequence[QueuedEvent], *, now: datetime, error: str) -> None:
        with self._transaction() as db:
            db.executemany(
                _DEAD, [(now.timestamp(), error[:1000], r.queue_id, r.claim_token) for r in records]
            )
            dropped = db.execute(_DROP_DEAD_OVER_BOUND, (self._max_dead,)).rowcount
        if dropped:
            log.warning(
                "queue.dead_letters_dropped", extra={"rows": dropped, "maxDead": self._max_dead}
            )

    # -- dead letters and gauges ---------------------------------------------------
    def list_dead(self, *, limit: int = 100) -> list[DeadEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event_json, attempts, last_error, enqueued_at, finished_at"
                " FROM webhook_queue WHERE state = 'dead' ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadEvent(
                queue_id=row[0],
                event=WebhookEvent.from_json(row[1]),
                attempts=row[2],
                error=row[3],
                enqueued_at=_dt(row[4]),
                died_at=_dt(row[5]),
            )
            for row in rows
        ]

    def retry_dead(self, queue_id: int, *, now: datetime) -> bool:
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE webhook_queue SET state = 'pending', attempts = 0, lapsed_claims = 0,"
                " claim_token = NULL, available_at = ?, finished_at = NULL"
                " WHERE id = ? AND state = 'dead'",
                (now.timestamp(), queue_id),
            )
            return cur.rowcount == 1

    def depth(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM webhook_queue WHERE state = 'pending'"
            ).fetchone()
        return int(row[0])

    def oldest_age(self, *, now: datetime) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(enqueued_at) FROM webhook_queue WHERE state = 'pending'"
            ).fetchone()
        return None if row[0] is None else max(0.0, now.timestamp() - row[0])

    def count_done(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM webhook_queue WHERE state = 'done'"
            ).fetchone()
        return int(row[0])

    def prune_done(self, *, before: datetime) -> int:
        """Forget settled events. Their dedupe keys go too, so keep them longer than
        Strava redelivers (minutes): a day is plenty. `claim` already does this on its
        own (docs/architecture.md, "The webhook queue on SQLite"); this is the whole sweep
        at once."""
        with self._transaction() as db:
            cur = db.execute(
                "DELETE FROM webhook_queue WHERE state = 'done' AND finished_at < ?",
                (before.timestamp(),),
            )
            return cur.rowcount

    # -- helpers -------------------------------------------------------------------
    def _prune_if_due(self, now: datetime) -> None:
        """Delete up to `_PRUNE_BATCH` done rows older than the retention, when the last
        prune is an hour past; a full batch leaves more, so the next claim goes on."""
        if self._monotonic() < self._next_prune:
            return
        cutoff = (now - self._done_retention).timestamp()
        dead_cutoff = (now - self._dead_retention).timestamp()
        with self._transaction() as db:
            deleted = db.execute(_PRUNE_SOME, (cutoff, _PRUNE_BATCH)).rowcount
            expired = db.execute(_PRUNE_DEAD_SOME, (dead_cutoff, _PRUNE_BATCH)).rowcount
            holding = db.execute(
                "SELECT DISTINCT claimed_by FROM webhook_queue"
                " WHERE state = 'pending' AND claim_token IS NOT NULL"
            ).fetchall()
            self._claimant.sweep(keep={str(row[0]) for row in holding})
        if max(deleted, expired) < _PRUNE_BATCH:  # a full batch of either: go on next claim
            self._next_prune = self._monotonic() + _PRUNE_EVERY_S
        if deleted:
            log.info("queue.pruned", extra={"rows": deleted, "before": _dt(cutoff).isoformat()})
        if expired:
            log.info(
                "queue.dead_letters_expired",
                extra={"rows": expired, "before": _dt(dead_cutoff).isoformat()},
            )

    def _end_leases_of_dead_claimants(self, db: sqlite3.Connection, ts: float, me: str) -> int:
        """In the claim's transaction: the leases of claimants proven dead end now."""
        ended = 0
        for (claimant,) in db.execute(_OTHER_CLAIMANTS, (ts, me)).fetchall():
            if self._claimant.take_if_dead(str(claimant)):
                ended += db.execute(_END_LEASES, (ts, ts, claimant)).rowcount
        return ended

    def _missing_columns(self) -> list[str]:
        """Under `_lock`: the columns added since the first schema that the table lacks."""
        columns = {c[1] for c in self._db.execute("PRAGMA table_info(webhook_queue)")}
        return [name for name in _ADDED_COLUMNS if name not in columns]

    def _settle(
        self, records: Sequence[QueuedEvent], statement: str, params: tuple[object, ...]
    ) -> None:
        with self._transaction() as db:
            db.executemany(
                statement,
                [(*params, r.queue_id, r.claim_token) for r in records],
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._transaction_held() as db:
            yield db

    @contextmanager
    def _transaction_held(self, deadline: float | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction; the caller holds `_lock`. `deadline` (monotonic):
        when to give up waiting for the write lock; default the busy timeout."""
        self._begin_immediate(deadline)
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _begin_immediate(self, deadline: float | None = None) -> None:
        """BEGIN IMMEDIATE, retried every 0.5-2 ms while another connection writes."""
        if deadline is None:
            deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.0005
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() >= deadline:
                        raise
                else:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")


@dataclass(slots=True, eq=False)  # compared by identity: two callers may send one row
class _Enqueue:
    """One caller's row in a group commit, and how its commit ended."""

    row: tuple[str, str, str, float, float]
    settled: bool = False
    new: bool = False
    error: Exception | None = None


_BUSY = "the event queue is busy (its SQLite file is locked by another writer)"


def _busy(exc: Exception) -> bool:
    return (
        isinstance(exc, sqlite3.OperationalError)
        and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _queued(row: Sequence[object]) -> QueuedEvent:
    queue_id, event_json, attempts, enqueued_at, token, last_error = row
    assert isinstance(queue_id, int)
    assert isinstance(event_json, str)
    assert isinstance(attempts, int)
    assert isinstance(enqueued_at, float | int)
    return QueuedEvent(
        queue_id=queue_id,
        event=WebhookEvent.from_json(event_json),
        attempts=attempts,
        enqueued_at=_dt(float(enqueued_at)),
        claim_token=str(token or ""),
        last_error=str(last_error or ""),
    )
