"""The embedded store: ports.Store over one SQLite file holding the same items as the
DynamoDB table (docs/architecture.md, "Data model"). SqliteStore opens the file, keeps
its schema and migrations, the accounts, the audit and the application state; each
other port is a mixin of its own module (sqlite_ledger, sqlite_leases,
sqlite_workouts, sqlite_streams, tokens), all reaching the file through sqlite_access.
Its columns, durability and conditional writes: docs/architecture.md, "The two stores".
"""

from __future__ import annotations

import base64
import contextlib
import errno
import math
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite_access import RowAccess, loads
from garmin2strava.adapters.store.sqlite_leases import LeaseRows
from garmin2strava.adapters.store.sqlite_ledger import LedgerRows
from garmin2strava.adapters.store.sqlite_streams import StreamTables, upgrade_stream_tables
from garmin2strava.adapters.store.sqlite_workouts import WorkoutRows
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
)
from garmin2strava.errors import ConfigError, TransientError
from garmin2strava.ports import StoreView, TokenCipher

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


class SqliteStore(TokenItems, LedgerRows, LeaseRows, WorkoutRows, StreamTables):
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
        _create_private(path)
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            msg = f"setting G2S_DB_PATH: cannot open {path}: {exc}"
            raise ConfigError(msg) from None
        self._rows = RowAccess(conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            # A read first: a store that has its schema opens while another process
            # holds the write lock (the schema write would wait the busy timeout).
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                with self._rows.write() as locked:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        locked.execute(statement)
                    upgrade_stream_tables(locked)
                    locked.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            if _is_busy(exc):
                msg = f"the store {path} is locked by another process"
                raise TransientError(msg) from None
            msg = f"setting G2S_DB_PATH: {path} is not a usable SQLite store: {exc}"
            raise ConfigError(msg) from None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    def close(self) -> None:
        self._rows.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts -----------------------------------------------------------------------
    def get_account(self, user_id: str) -> Account | None:
        body = self._rows.get_body(codec.user_pk(user_id), codec.ACCOUNT_SK)
        return None if body is None else codec.account_from_item(body)

    def put_account(self, account: Account) -> None:
        pk = codec.user_pk(account.user_id)
        with self._rows.write() as conn:
            self._rows.put(conn, pk, codec.ACCOUNT_SK, codec.account_to_item(account))
            self._rows.put(conn, codec.ACCOUNTS_PK, pk, {"userId": account.user_id})

    def list_accounts(self) -> list[Account]:
        rows = self._rows.query(
            "SELECT a.body FROM items AS r JOIN items AS a ON a.pk = r.sk AND a.sk = ? "
            "WHERE r.pk = ? ORDER BY r.sk",
            (codec.ACCOUNT_SK, codec.ACCOUNTS_PK),
        )
        return [codec.account_from_item(loads(row[0])) for row in rows]

    def delete_account(self, user_id: str) -> None:
        pk = codec.user_pk(user_id)
        with self._rows.write() as conn:
            body = self._rows.get_body_in(conn, pk, codec.ACCOUNT_SK)
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
            row = self._rows.get_row(conn, pk, codec.GARMIN_TOKEN_SK)
            if row is not None:
                self._rows.put(
                    conn, pk, codec.GARMIN_TOKEN_SK, {"deleted": True}, version=row[1] + 1
                )

    def link_athlete(self, athlete_id: int, user_id: str) -> None:
        with self._rows.write() as conn:
            self._rows.put(
                conn,
                codec.athlete_pk(athlete_id),
                codec.ATHLETE_USER_SK,
                {"athleteId": athlete_id, "userId": user_id},
            )

    def user_for_athlete(self, athlete_id: int) -> str | None:
        body = self._rows.get_body(codec.athlete_pk(athlete_id), codec.ATHLETE_USER_SK)
        return None if body is None else str(body["userId"])

    def known_athletes(self) -> frozenset[int]:
        # A range of the primary key (every ATHLETE#... pk sorts before "ATHLETE$"):
        # the link rows only, never the rest of the table.
        rows = self._rows.query(
            "SELECT pk FROM items WHERE pk >= ? AND pk < ? AND sk = ?",
            (codec.athlete_pk_prefix(), codec.athlete_pk_end(), codec.ATHLETE_USER_SK),
        )
        return frozenset(codec.athlete_id_of_pk(str(row[0])) for row in rows)

    # -- tokens (the items themselves: TokenItems) ------------------------------------------
    def _read_secret(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        row = self._rows.read_row(pk, sk)
        if row is None:
            return None
        body = loads(row[0])
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
        with self._rows.write() as conn:
            row = self._rows.get_row(conn, pk, sk)
            live = row is not None and "ciphertext" in loads(row[0])
            stored_version = row[1] if row is not None and live else None
            # Condition: the version the caller read is still the stored one.
            if stored_version != expected_version:
                return None
            new_version = (0 if row is None else row[1]) + 1
            self._rows.put(conn, pk, sk, body, version=new_version)
            return new_version

    def delete_strava_tokens(self, user_id: str) -> None:
        """Forget the tokens, leaving a tombstone that keeps the version counter."""
        pk, sk = codec.user_pk(user_id), codec.STRAVA_TOKEN_SK
        with self._rows.write() as conn:
            row = self._rows.get_row(conn, pk, sk)
            if row is not None:
                self._rows.put(conn, pk, sk, {"deleted": True}, version=row[1] + 1)

    # -- audit ------------------------------------------------------------------------------
    def add_audit(self, event: AuditEvent, *, retention_days: int = 7) -> None:
        pk = codec.user_pk(event.user_id)
        expires_at = math.floor((event.at + timedelta(days=retention_days)).timestamp())
        with self._rows.write() as conn:
            self._rows.put(
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
        rows = self._rows.query(
            "SELECT body FROM items WHERE pk = ? AND sk >= ? AND sk < 'AUDIT$' "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY sk DESC LIMIT ?",
            (codec.user_pk(user_id), lower, math.floor(self._clock().timestamp()), limit),
        )
        return [codec.audit_from_item(loads(row[0])) for row in rows]

    # -- deletion of an athlete's Strava data ----------------------------------------------
    def forget_strava_data(self, user_id: str) -> int:
        """The workouts, their streams and the audit items of the account, in one
        transaction."""
        pk = codec.user_pk(user_id)
        with self._rows.write() as conn:
            cursor = conn.execute(
                "DELETE FROM items WHERE pk = ? AND ((sk >= ? AND sk < ?) OR (sk >= ? AND sk < ?))",
                (
                    pk,
                    *codec.prefix_range(codec.WORKOUT_PREFIX),
                    *codec.prefix_range(codec.AUDIT_PREFIX),
                ),
            )
            return cursor.rowcount + self._forget_streams(conn, user_id)

    # -- what an invocation reads first (ports.ViewReads) --------------------------------------
    def read_view(self, app_keys: Sequence[str]) -> StoreView:
        """Plain reads: a local file's reads cost nothing to save."""
        return StoreView(
            accounts=tuple(self.list_accounts()),
            app_state={k: self.get_app_state(k) for k in app_keys},
        )

    # -- application-wide state ---------------------------------------------------------------
    def get_app_state(self, key: str) -> dict[str, Any] | None:
        return self._rows.get_body(codec.APP_STATE_PK, codec.app_state_sk(key))

    def put_app_state(self, key: str, value: dict[str, Any]) -> None:
        with self._rows.write() as conn:
            self._rows.put(conn, codec.APP_STATE_PK, codec.app_state_sk(key), value)
