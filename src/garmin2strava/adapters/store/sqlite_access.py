"""The SQLite store's one connection, guarded by a lock (the daemon calls in from several
threads): read-modify-write transactions, queries, and the `items` rows read and written
whole. What sqlite_access.py is to the SQLite store, dynamodb_access.py is to the
DynamoDB one: every per-port module reaches the file through it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["RowAccess", "dumps", "loads"]


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        msg = "store item body is not a JSON object"
        raise TypeError(msg)
    return value


class RowAccess:
    """One connection opened in autocommit mode (SqliteStore opens it) and its lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.lock = threading.RLock()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A read-modify-write transaction that holds the database write lock throughout."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            rows: list[tuple[Any, ...]] = self.conn.execute(sql, params).fetchall()
            return rows

    @staticmethod
    def get_row(conn: sqlite3.Connection, pk: str, sk: str) -> tuple[str, int, int | None] | None:
        row = conn.execute(
            "SELECT body, version, expires_at FROM items WHERE pk = ? AND sk = ?", (pk, sk)
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), int(row[1]), None if row[2] is None else int(row[2])

    def read_row(self, pk: str, sk: str) -> tuple[str, int, int | None] | None:
        """get_row outside a transaction."""
        with self.lock:
            return self.get_row(self.conn, pk, sk)

    def get_body(self, pk: str, sk: str) -> dict[str, Any] | None:
        row = self.read_row(pk, sk)
        return None if row is None else loads(row[0])

    @classmethod
    def get_body_in(cls, conn: sqlite3.Connection, pk: str, sk: str) -> dict[str, Any] | None:
        row = cls.get_row(conn, pk, sk)
        return None if row is None else loads(row[0])

    @staticmethod
    def put(
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
            (pk, sk, dumps(body), version, expires_at, lsi1sk, gsi1pk, gsi1sk),
        )

    def close(self) -> None:
        with self.lock:
            self.conn.close()
