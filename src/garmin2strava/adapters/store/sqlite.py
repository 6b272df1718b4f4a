"""The embedded store: ports.Store over one SQLite file that mirrors the DynamoDB items.

One table `items(pk, sk, body JSON, version, expires_at, lsi1sk, gsi1pk, gsi1sk)` holds
exactly the items of docs/architecture.md, "Data model"; codec.py builds keys and bodies for both
stores. Secondary columns exist only where a query needs them, and each one is
something DynamoDB can index the same way (no scans):
- `lsi1sk`: workouts by start time (`workouts_starting_between`, `list_workouts`) and
  the ledger newest first (`list_uploads`); a local secondary index on PK.
- `gsi1pk`/`gsi1sk`: a sparse index holding only unsettled ledger entries
  (`list_unsettled_uploads`).
- `expires_at`: epoch seconds, the DynamoDB TTL attribute (audit events, the lease).
- `list_accounts` reads a registry item per account, PK `ACCOUNTS` / SK `USER#{id}`,
  written in the same transaction as the account (a Query in DynamoDB).
- Application-wide state lives under PK `APP` / SK `STATE#{key}`.

Tokens are stored only encrypted, with context f"{pk}/{sk}" as associated data.

Durability and concurrency: WAL with synchronous=FULL (the uploader's intent record
must survive a SIGKILL right after the write returns), one connection guarded by a
lock (the daemon calls in from several threads), BEGIN IMMEDIATE around every
read-modify-write, and a busy timeout so two processes can share the file.

Conditional writes carry the same conditions as in DynamoDB: the lease, token
compare-and-swap, workouts, and the ledger's intent (a pending entry never replaces a
settled one).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import math
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite_streams import StreamTables, upgrade_stream_tables
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    LedgerEntry,
    UploadOutcome,
    Workout,
)
from garmin2strava.domain.streams import ActivityStreams, PendingStreams
from garmin2strava.errors import ConfigError, TransientError
from garmin2strava.ports import TokenCipher

__all__ = ["SqliteStore"]

SCHEMA_VERSION = 3  # 2: the streams tables; 3: their failed reads and notes
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    body TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    lsi1sk TEXT,
    gsi1pk TEXT,
    gsi1sk TEXT,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_lsi1 ON items (pk, lsi1sk) WHERE lsi1sk IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_gsi1 ON items (gsi1pk, gsi1sk) WHERE gsi1pk IS NOT NULL;
"""
_BATCH = 500  # stays under SQLite's bound-parameter limit
_SETTLED = json.dumps(codec.SETTLED_OUTCOMES)
# The ledger's intent write: insert, or replace an entry that is not settled. Same
# condition as DynamoDB's `attribute_not_exists(PK) OR NOT (outcome IN settled)`; an
# entry without an outcome counts as not settled there too.
_PUT_INTENT = """
INSERT INTO items (pk, sk, body, version, expires_at, lsi1sk, gsi1pk, gsi1sk)
VALUES (?, ?, ?, 0, NULL, ?, ?, ?)
ON CONFLICT (pk, sk) DO UPDATE SET
    body = excluded.body, version = excluded.version, expires_at = excluded.expires_at,
    lsi1sk = excluded.lsi1sk, gsi1pk = excluded.gsi1pk, gsi1sk = excluded.gsi1sk
WHERE ifnull(json_extract(items.body, '$.outcome'), '')
    NOT IN (SELECT value FROM json_each(?))
"""


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        msg = "store item body is not a JSON object"
        raise TypeError(msg)
    return value


# The files SQLite creates beside the database (WAL mode, and rollback journals).
_COMPANIONS = ("-wal", "-shm", "-journal")


def _create_private(path: Path) -> None:
    """Create the file (and its directory) so it is private from its first byte; SQLite
    gives the -wal and -shm files the same mode. A symbolic link is refused, not
    followed: the chmod would land on whatever it points at, and SQLite would write
    its journal through a linked -wal, -shm or -journal file to wherever that points."""
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.is_symlink():
            msg = f"setting G2S_DB_PATH: {companion} is a symbolic link; remove it"
            raise ConfigError(msg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            msg = f"setting G2S_DB_PATH: {path} is a symbolic link; give the file itself"
        else:
            msg = f"setting G2S_DB_PATH: cannot open {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            msg = f"setting G2S_DB_PATH: {path} is not a regular file"
            raise ConfigError(msg)
        with contextlib.suppress(PermissionError):  # not ours: leave the owner's choice
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class SqliteStore(TokenItems):
    """ports.Store on a local SQLite file (created with its directory, mode 0600)."""

    def __init__(
        self,
        path: Path,
        cipher: TokenCipher,
        *,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._path = path
        self._cipher = cipher
        self._clock = clock  # what has expired (audit events' retention) is decided by it
        self._lock = threading.RLock()
        _create_private(path)
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            msg = f"setting G2S_DB_PATH: cannot open {path}: {exc}"
            raise ConfigError(msg) from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            # A read first: a store that has its schema opens while another process
            # holds the write lock (the schema write would wait the busy timeout).
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                with self._write() as conn:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
                    upgrade_stream_tables(conn)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._conn.close()
            if _is_busy(exc):
                msg = f"the store {path} is locked by another process"
                raise TransientError(msg) from None
            msg = f"setting G2S_DB_PATH: {path} is not a usable SQLite store: {exc}"
            raise ConfigError(msg) from None
        self._streams = StreamTables(self._write, self._query)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A read-modify-write transaction that holds the database write lock throughout."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
            return rows

    def _get_row(
        self, conn: sqlite3.Connection, pk: str, sk: str
    ) -> tuple[str, int, int | None] | None:
        row = conn.execute(
            "SELECT body, version, expires_at FROM items WHERE pk = ? AND sk = ?", (pk, sk)
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), int(row[1]), None if row[2] is None else int(row[2])

    def _get_body(self, pk: str, sk: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._get_row(self._conn, pk, sk)
        return None if row is None else _loads(row[0])

    @staticmethod
    def _put(
        conn: sqlite3.Connection,
        pk: str,
        sk: str,
        body: dict[str, Any],
        *,
        version: int = 0,
        expires_at: int | None = None,
        lsi1sk: str | None = None,
        gsi1pk: str | None = None,
        gsi1sk: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO items "
            "(pk, sk, body, version, expires_at, lsi1sk, gsi1pk, gsi1sk) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pk, sk, _dumps(body), version, expires_at, lsi1sk, gsi1pk, gsi1sk),
        )

    # -- accounts -----------------------------------------------------------------------
    def get_account(self, user_id: str) -> Account | None:
        body = self._get_body(codec.user_pk(user_id), codec.ACCOUNT_SK)
        return None if body is None else codec.account_from_item(body)

    def put_account(self, account: Account) -> None:
        pk = codec.user_pk(account.user_id)
        with self._write() as conn:
            self._put(conn, pk, codec.ACCOUNT_SK, codec.account_to_item(account))
            self._put(conn, codec.ACCOUNTS_PK, pk, {"userId": account.user_id})

    def list_accounts(self) -> list[Account]:
        rows = self._query(
            "SELECT a.body FROM items AS r JOIN items AS a ON a.pk = r.sk AND a.sk = ? "
            "WHERE r.pk = ? ORDER BY r.sk",
            (codec.ACCOUNT_SK, codec.ACCOUNTS_PK),
        )
        return [codec.account_from_item(_loads(row[0])) for row in rows]

    def delete_account(self, user_id: str) -> None:
        pk = codec.user_pk(user_id)
        with self._write() as conn:
            body = self._get_body_in(conn, pk, codec.ACCOUNT_SK)
            athlete_id = None if body is None else body.get("stravaAthleteId")
            if athlete_id is not None:
                conn.execute(
                    "DELETE FROM items WHERE pk = ? AND sk = ? "
                    "AND json_extract(body, '$.userId') = ?",
                    (codec.athlete_pk(int(athlete_id)), codec.ATHLETE_USER_SK, user_id),
                )
            conn.execute(
                "DELETE FROM items WHERE (pk = ? AND sk IN (?, ?)) OR (pk = ? AND sk = ?)",
                (pk, codec.ACCOUNT_SK, codec.LEASE_SK, codec.ACCOUNTS_PK, pk),
            )
            row = self._get_row(conn, pk, codec.GARMIN_TOKEN_SK)
            if row is not None:
                self._put(conn, pk, codec.GARMIN_TOKEN_SK, {"deleted": True}, version=row[1] + 1)

    def _get_body_in(self, conn: sqlite3.Connection, pk: str, sk: str) -> dict[str, Any] | None:
        row = self._get_row(conn, pk, sk)
        return None if row is None else _loads(row[0])

    def link_athlete(self, athlete_id: int, user_id: str) -> None:
        with self._write() as conn:
            self._put(
                conn,
                codec.athlete_pk(athlete_id),
                codec.ATHLETE_USER_SK,
                {"athleteId": athlete_id, "userId": user_id},
            )

    def user_for_athlete(self, athlete_id: int) -> str | None:
        body = self._get_body(codec.athlete_pk(athlete_id), codec.ATHLETE_USER_SK)
        return None if body is None else str(body["userId"])

    # -- tokens ---------------------------------------------------------------------------
    def _read_secret(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        with self._lock:
            row = self._get_row(self._conn, pk, sk)
        if row is None:
            return None
        body = _loads(row[0])
        if "ciphertext" not in body:  # a deletion tombstone
            return None
        sealed = base64.b64decode(body["ciphertext"])
        return self._cipher.decrypt(sealed, context=f"{pk}/{sk}"), row[1]

    def _replace_secret(
        self, pk: str, sk: str, plaintext: bytes, expected_version: int | None
    ) -> int | None:
        """Write only if the stored version is `expected_version` (None: nothing stored).

        Returns the new version, or None when another writer changed the item first.
        Versions keep growing across deletions (the tombstone keeps the counter), so a
        writer holding a version from before a delete can never win afterwards.
        """
        sealed = self._cipher.encrypt(plaintext, context=f"{pk}/{sk}")
        body = {"ciphertext": base64.b64encode(sealed).decode("ascii")}
        with self._write() as conn:
            row = self._get_row(conn, pk, sk)
            live = row is not None and "ciphertext" in _loads(row[0])
            stored_version = row[1] if row is not None and live else None
            # Condition: the version the caller read is still the stored one.
            if stored_version != expected_version:
                return None
            new_version = (0 if row is None else row[1]) + 1
            self._put(conn, pk, sk, body, version=new_version)
            return new_version

    def delete_strava_tokens(self, user_id: str) -> None:
        """Forget the tokens, leaving a tombstone that keeps the version counter."""
        pk, sk = codec.user_pk(user_id), codec.STRAVA_TOKEN_SK
        with self._write() as conn:
            row = self._get_row(conn, pk, sk)
            if row is not None:
                self._put(conn, pk, sk, {"deleted": True}, version=row[1] + 1)

    # -- upload ledger ----------------------------------------------------------------------
    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]:
        pk = codec.user_pk(user_id)
        sks = [codec.upload_sk(gid) for gid in dict.fromkeys(garmin_ids)]
        found: dict[int, LedgerEntry] = {}
        for start in range(0, len(sks), _BATCH):
            chunk = sks[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT body FROM items WHERE pk = ? AND sk IN ({marks})",  # noqa: S608 - only "?" marks are interpolated
                (pk, *chunk),
            )
            for row in rows:
                entry = codec.ledger_from_item(_loads(row[0]))
                found[entry.garmin_activity_id] = entry
        return found

    def put_upload(self, entry: LedgerEntry) -> None:
        """Raises StoreConflict when an intent (pending) would overwrite a settled entry."""
        pk, sk = codec.user_pk(entry.user_id), codec.upload_sk(entry.garmin_activity_id)
        body = codec.ledger_to_item(entry)
        sort_key = codec.ledger_lsi1sk(entry)
        unsettled = not entry.outcome.settled
        # Sparse index: only entries the uploader still has to finish are in it.
        gsi1pk = codec.unsettled_gsi1pk(entry.user_id) if unsettled else None
        gsi1sk = sort_key if unsettled else None
        with self._write() as conn:
            if entry.outcome is not UploadOutcome.PENDING:
                self._put(conn, pk, sk, body, lsi1sk=sort_key, gsi1pk=gsi1pk, gsi1sk=gsi1sk)
                return
            # The intent record, written before the upload request: it must never
            # replace a settled outcome (another runner finished this activity), or the
            # next cycle would upload the activity a second time. One statement, so the
            # check and the write are one step.
            cursor = conn.execute(
                _PUT_INTENT, (pk, sk, _dumps(body), sort_key, gsi1pk, gsi1sk, _SETTLED)
            )
            written = cursor.rowcount == 1
        if not written:
            raise codec.intent_refused(entry.garmin_activity_id)

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        rows = self._query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= 'UPLOAD#' AND lsi1sk < 'UPLOAD$' "
            "ORDER BY lsi1sk DESC LIMIT ?",
            (codec.user_pk(user_id), limit),
        )
        return [codec.ledger_from_item(_loads(row[0])) for row in rows]

    def list_unsettled_uploads(self, user_id: str) -> list[LedgerEntry]:
        """Oldest Garmin start first, the order the uploader works in."""
        rows = self._query(
            "SELECT body FROM items WHERE gsi1pk = ? ORDER BY gsi1sk",
            (codec.unsettled_gsi1pk(user_id),),
        )
        return [codec.ledger_from_item(_loads(row[0])) for row in rows]

    # -- sync lease -------------------------------------------------------------------------
    def acquire_lease(self, user_id: str, owner: str, *, now: datetime, ttl_seconds: int) -> bool:
        pk = codec.user_pk(user_id)
        expires = now + timedelta(seconds=ttl_seconds)
        with self._write() as conn:
            row = self._get_row(conn, pk, codec.LEASE_SK)
            if row is not None:
                held = _loads(row[0])
                # Condition: free, expired, or already ours (a renewal).
                still_valid = codec.parse_time(str(held["expiresAt"])) > now
                if still_valid and held["owner"] != owner:
                    return False
            self._put(
                conn,
                pk,
                codec.LEASE_SK,
                {"owner": owner, "expiresAt": codec.format_time(expires)},
                expires_at=math.ceil(expires.timestamp()),
            )
            return True

    def release_lease(self, user_id: str, owner: str) -> None:
        with self._write() as conn:
            # Condition: only the holder releases; a late release after expiry and
            # takeover must not free someone else's lease.
            conn.execute(
                "DELETE FROM items WHERE pk = ? AND sk = ? AND json_extract(body, '$.owner') = ?",
                (codec.user_pk(user_id), codec.LEASE_SK, owner),
            )

    # -- audit ------------------------------------------------------------------------------
    def add_audit(self, event: AuditEvent, *, retention_days: int = 7) -> None:
        pk = codec.user_pk(event.user_id)
        expires_at = math.floor((event.at + timedelta(days=retention_days)).timestamp())
        with self._write() as conn:
            self._put(
                conn,
                pk,
                codec.audit_sk(event.at, event.event_id),
                codec.audit_to_item(event),
                expires_at=expires_at,
            )
            # What DynamoDB's TTL does by itself.
            conn.execute(
                "DELETE FROM items WHERE pk = ? AND sk >= 'AUDIT#' AND sk < 'AUDIT$' "
                "AND expires_at <= ?",
                (pk, math.floor(self._clock().timestamp())),
            )

    def list_audit(
        self, user_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[AuditEvent]:
        lower = codec.AUDIT_PREFIX + ("" if since is None else codec.format_time(since))
        rows = self._query(
            "SELECT body FROM items WHERE pk = ? AND sk >= ? AND sk < 'AUDIT$' "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY sk DESC LIMIT ?",
            (codec.user_pk(user_id), lower, math.floor(self._clock().timestamp()), limit),
        )
        return [codec.audit_from_item(_loads(row[0])) for row in rows]

    # -- mirror -----------------------------------------------------------------------------
    def upsert_workout(self, workout: Workout) -> bool:
        pk = codec.user_pk(workout.user_id)
        sk = codec.workout_sk(workout.activity_id)
        with self._write() as conn:
            row = self._get_row(conn, pk, sk)
            # Condition: an older event or fetch never overwrites a newer row.
            if row is not None:
                stored_at = codec.parse_time(str(_loads(row[0])["updatedAt"]))
                if stored_at > workout.updated_at:
                    return False
            self._put(
                conn,
                pk,
                sk,
                codec.workout_to_item(workout),
                lsi1sk=codec.workout_lsi1sk(workout.start_utc, workout.activity_id),
            )
            return True

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        body = self._get_body(codec.user_pk(user_id), codec.workout_sk(activity_id))
        return None if body is None else codec.workout_from_item(body)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = 3000
    ) -> list[Workout]:
        """Newest start first."""
        rows = self._query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= 'WORKOUT#' "
            "AND lsi1sk < 'WORKOUT$' AND (? OR json_extract(body, '$.isDeleted') = 0) "
            "ORDER BY lsi1sk DESC LIMIT ?",
            (codec.user_pk(user_id), include_deleted, limit),
        )
        return [codec.workout_from_item(_loads(row[0])) for row in rows]

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first."""
        rows = self._query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= ? AND lsi1sk < ? "
            "AND json_extract(body, '$.isDeleted') = 0 ORDER BY lsi1sk",
            (
                codec.user_pk(user_id),
                codec.workout_lsi1sk(start),
                codec.workout_lsi1sk(end) + "$",  # '$' sorts after the '#id' suffix
            ),
        )
        return [codec.workout_from_item(_loads(row[0])) for row in rows]

    def iter_workouts(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        include_deleted: bool = False,
        page_size: int = 500,
    ) -> Iterator[Workout]:
        """Oldest start first, `page_size` rows a query (keyset paging on the start index)."""
        after = codec.workout_lsi1sk(since) if since is not None else "WORKOUT#"
        while True:
            rows = self._query(
                "SELECT lsi1sk, body FROM items WHERE pk = ? AND lsi1sk >= ? "
                "AND lsi1sk < 'WORKOUT$' AND (? OR json_extract(body, '$.isDeleted') = 0) "
                "ORDER BY lsi1sk LIMIT ?",
                (codec.user_pk(user_id), after, include_deleted, page_size),
            )
            for _, body in rows:
                yield codec.workout_from_item(_loads(body))
            if len(rows) < page_size:
                return
            after = str(rows[-1][0]) + "\x00"  # just past the last key read

    # -- streams (sqlite_streams.py) -----------------------------------------------------------
    def put_streams(self, streams: ActivityStreams) -> None:
        self._streams.put_streams(streams)

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        return self._streams.get_streams(user_id, activity_id)

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        self._streams.mark_streams_pending(user_id, activity_id)

    def mark_streams_failed(
        self, user_id: str, activity_id: int, *, failures: int, retry_at: datetime
    ) -> None:
        self._streams.mark_streams_failed(
            user_id, activity_id, failures=failures, retry_at=retry_at
        )

    def get_pending_streams(self, user_id: str, activity_id: int) -> PendingStreams | None:
        return self._streams.get_pending_streams(user_id, activity_id)

    def list_pending_streams(
        self, user_id: str, *, limit: int = 100, due_at: datetime | None = None
    ) -> list[int]:
        return self._streams.list_pending_streams(user_id, limit=limit, due_at=due_at)

    def forget_strava_data(self, user_id: str) -> int:
        """The workouts, their streams and the audit items of the account, in one
        transaction."""
        pk = codec.user_pk(user_id)
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM items WHERE pk = ? AND ((sk >= ? AND sk < ?) OR (sk >= ? AND sk < ?))",
                (
                    pk,
                    *codec.prefix_range(codec.WORKOUT_PREFIX),
                    *codec.prefix_range(codec.AUDIT_PREFIX),
                ),
            )
            return cursor.rowcount + self._streams.forget(conn, user_id)

    # -- application-wide state ---------------------------------------------------------------
    def get_app_state(self, key: str) -> dict[str, Any] | None:
        return self._get_body(codec.APP_STATE_PK, codec.app_state_sk(key))

    def put_app_state(self, key: str, value: dict[str, Any]) -> None:
        with self._write() as conn:
            self._put(conn, codec.APP_STATE_PK, codec.app_state_sk(key), value)
