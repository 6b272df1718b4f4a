"""Activity streams in the SQLite store: their own tables beside `items`.

`streams` holds one row per fetched activity, the streams as compressed JSON (blobs.py)
in one BLOB: SQLite has no item size limit, and the mirror reads an activity's streams
whole (`note`: why none were kept when the reads were given up). `streams_pending`
holds the activities whose streams are still to be fetched, with their failed reads
and the time before which they are not tried again. Both are written under the
store's lock and transactions (sqlite_access.RowAccess).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from garmin2strava.adapters.store import blobs, codec
from garmin2strava.adapters.store.sqlite_access import RowAccess
from garmin2strava.domain.streams import ActivityStreams, PendingStreams

__all__ = ["STREAMS_SCHEMA", "StreamTables", "upgrade_stream_tables"]

STREAMS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streams (
    user_id TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    fetched_at TEXT NOT NULL,
    types TEXT NOT NULL,
    body BLOB NOT NULL,
    note TEXT,
    PRIMARY KEY (user_id, activity_id)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS streams_pending (
    user_id TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    retry_at TEXT,
    PRIMARY KEY (user_id, activity_id)
) WITHOUT ROWID""",
)
# Columns added since schema 2 (a store made then gets them on open).
_ADDED_COLUMNS = (
    ("streams", "note", "TEXT"),
    ("streams_pending", "failures", "INTEGER NOT NULL DEFAULT 0"),
    ("streams_pending", "retry_at", "TEXT"),
)


def upgrade_stream_tables(conn: sqlite3.Connection) -> None:
    """Create the two tables, or add to older ones the columns they lack (inside the
    caller's transaction)."""
    for statement in STREAMS_SCHEMA:
        conn.execute(statement)
    for table, column, kind in _ADDED_COLUMNS:
        have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class StreamTables:
    """ports.StreamStore on the two tables, mixed into SqliteStore (which gives `_rows`)."""

    _rows: RowAccess

    def put_streams(self, streams: ActivityStreams) -> None:
        with self._rows.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO streams "
                "(user_id, activity_id, fetched_at, types, body, note) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    streams.user_id,
                    streams.activity_id,
                    codec.format_time(streams.fetched_at),
                    ",".join(streams.streams),
                    blobs.pack(streams.streams),
                    streams.note,
                ),
            )
            conn.execute(
                "DELETE FROM streams_pending WHERE user_id = ? AND activity_id = ?",
                (streams.user_id, streams.activity_id),
            )

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        rows = self._rows.query(
            "SELECT fetched_at, body, note FROM streams WHERE user_id = ? AND activity_id = ?",
            (user_id, activity_id),
        )
        if not rows:
            return None
        fetched_at, body, note = rows[0]
        return ActivityStreams(
            user_id=user_id,
            activity_id=activity_id,
            fetched_at=codec.parse_time(str(fetched_at)),
            streams=dict(blobs.unpack(bytes(body))),
            note=None if note is None else str(note),
        )

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        with self._rows.write() as conn:
            # A fetched activity is never pending again: streams are read once.
            conn.execute(
                "INSERT OR IGNORE INTO streams_pending (user_id, activity_id) "
                "SELECT ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM streams WHERE user_id = ? AND activity_id = ?)",
                (user_id, activity_id, user_id, activity_id),
            )

    def mark_streams_failed(
        self, user_id: str, activity_id: int, *, failures: int, retry_at: datetime
    ) -> None:
        with self._rows.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO streams_pending (user_id, activity_id, failures, retry_at) "
                "SELECT ?, ?, ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM streams WHERE user_id = ? AND activity_id = ?)",
                (user_id, activity_id, failures, codec.format_time(retry_at), user_id, activity_id),
            )

    def get_pending_streams(self, user_id: str, activity_id: int) -> PendingStreams | None:
        rows = self._rows.query(
            "SELECT failures, retry_at FROM streams_pending WHERE user_id = ? AND activity_id = ?",
            (user_id, activity_id),
        )
        if not rows:
            return None
        failures, retry_at = rows[0]
        return PendingStreams(
            activity_id=activity_id,
            failures=int(failures),
            retry_at=None if retry_at is None else codec.parse_time(str(retry_at)),
        )

    def list_pending_streams(
        self, user_id: str, *, limit: int = 100, due_at: datetime | None = None
    ) -> list[int]:
        if due_at is None:
            rows = self._rows.query(
                "SELECT activity_id FROM streams_pending WHERE user_id = ? "
                "ORDER BY activity_id LIMIT ?",
                (user_id, limit),
            )
        else:  # fixed-width UTC text (codec.format_time): compared as strings
            rows = self._rows.query(
                "SELECT activity_id FROM streams_pending WHERE user_id = ? "
                "AND (retry_at IS NULL OR retry_at <= ?) ORDER BY activity_id LIMIT ?",
                (user_id, codec.format_time(due_at), limit),
            )
        return [int(row[0]) for row in rows]

    @staticmethod
    def _forget_streams(conn: sqlite3.Connection, user_id: str) -> int:
        """Delete the account's streams and pending marks inside the caller's
        transaction; the number of rows deleted."""
        deleted = conn.execute("DELETE FROM streams WHERE user_id = ?", (user_id,)).rowcount
        pending = conn.execute("DELETE FROM streams_pending WHERE user_id = ?", (user_id,))
        return int(deleted) + int(pending.rowcount)
