"""Activity streams in the SQLite store: their own tables beside `items`.

`streams` holds one row per fetched activity, the streams as compressed JSON (blobs.py)
in one BLOB: SQLite has no item size limit, and the mirror reads an activity's streams
whole. `streams_pending` holds the activities whose streams are still to be fetched.
Both are written under the store's lock and transactions (SqliteStore passes them in).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from garmin2strava.adapters.store import blobs, codec
from garmin2strava.domain.streams import ActivityStreams

__all__ = ["STREAMS_SCHEMA", "StreamTables"]

STREAMS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS streams (
    user_id TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    fetched_at TEXT NOT NULL,
    types TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (user_id, activity_id)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS streams_pending (
    user_id TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, activity_id)
) WITHOUT ROWID""",
)


class StreamTables:
    """The two tables, through the store's `write` transactions and `query`."""

    def __init__(
        self,
        write: Callable[[], AbstractContextManager[sqlite3.Connection]],
        query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
    ) -> None:
        self._write = write
        self._query = query

    def put_streams(self, streams: ActivityStreams) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO streams (user_id, activity_id, fetched_at, types, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    streams.user_id,
                    streams.activity_id,
                    codec.format_time(streams.fetched_at),
                    ",".join(streams.streams),
                    blobs.pack(streams.streams),
                ),
            )
            conn.execute(
                "DELETE FROM streams_pending WHERE user_id = ? AND activity_id = ?",
                (streams.user_id, streams.activity_id),
            )

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        rows = self._query(
            "SELECT fetched_at, body FROM streams WHERE user_id = ? AND activity_id = ?",
            (user_id, activity_id),
        )
        if not rows:
            return None
        fetched_at, body = rows[0]
        return ActivityStreams(
            user_id=user_id,
            activity_id=activity_id,
            fetched_at=codec.parse_time(str(fetched_at)),
            streams=dict(blobs.unpack(bytes(body))),
        )

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        with self._write() as conn:
            # A fetched activity is never pending again: streams are read once.
            conn.execute(
                "INSERT OR IGNORE INTO streams_pending (user_id, activity_id) "
                "SELECT ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM streams WHERE user_id = ? AND activity_id = ?)",
                (user_id, activity_id, user_id, activity_id),
            )

    def list_pending_streams(self, user_id: str, *, limit: int = 100) -> list[int]:
        rows = self._query(
            "SELECT activity_id FROM streams_pending WHERE user_id = ? "
            "ORDER BY activity_id LIMIT ?",
            (user_id, limit),
        )
        return [int(row[0]) for row in rows]

    @staticmethod
    def forget(conn: sqlite3.Connection, user_id: str) -> int:
        """Delete the account's streams and pending marks inside the caller's
        transaction; the number of rows deleted."""
        deleted = conn.execute("DELETE FROM streams WHERE user_id = ?", (user_id,)).rowcount
        pending = conn.execute("DELETE FROM streams_pending WHERE user_id = ?", (user_id,))
        return int(deleted) + int(pending.rowcount)
