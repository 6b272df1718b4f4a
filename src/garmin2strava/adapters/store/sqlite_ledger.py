"""The upload ledger in the SQLite store: `UPLOAD#` rows, newest first through the
`lsi1sk` column (LSI1 in DynamoDB), unsettled ones through the sparse `gsi1pk`/`gsi1sk`
columns (GSI1), the conditional write of an upload intent, and the account's
`LEDGER#MARK` row (domain/idle.py), whose version each ledger write raises in its own
transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite_access import RowAccess, dumps, loads
from garmin2strava.domain.idle import LedgerMark
from garmin2strava.domain.models import LedgerEntry, UploadOutcome

__all__ = ["LedgerRows"]

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


class LedgerRows:
    """ports.UploadLedger, mixed into SqliteStore (which gives `_rows`)."""

    _rows: RowAccess

    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]:
        pk = codec.user_pk(user_id)
        sks = [codec.upload_sk(gid) for gid in dict.fromkeys(garmin_ids)]
        found: dict[int, LedgerEntry] = {}
        for start in range(0, len(sks), _BATCH):
            chunk = sks[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self._rows.query(
                f"SELECT body FROM items WHERE pk = ? AND sk IN ({marks})",  # noqa: S608 - only "?" marks are interpolated
                (pk, *chunk),
            )
            for row in rows:
                entry = codec.ledger_from_item(loads(row[0]))
                found[entry.garmin_activity_id] = entry
        return found

    def put_upload(self, entry: LedgerEntry) -> None:
        """Raises StoreConflict when an intent (pending) would overwrite a settled entry."""
        pk, sk = codec.user_pk(entry.user_id), codec.upload_sk(entry.garmin_activity_id)
        body = codec.ledger_to_item(entry)
        sort_key = codec.ledger_lsi1sk(entry)
        unsettled = codec.in_uploaders_index(entry)
        # Sparse index: only entries the uploader still has to finish are in it.
        gsi1pk = codec.unsettled_gsi1pk(entry.user_id) if unsettled else None
        gsi1sk = sort_key if unsettled else None
        with self._rows.write() as conn:
            self._raise_ledger_version(conn, pk)
            if entry.outcome is not UploadOutcome.PENDING:
                self._rows.put(conn, pk, sk, body, lsi1sk=sort_key, gsi1pk=gsi1pk, gsi1sk=gsi1sk)
                return
            # The intent record, written before the upload request: it must never
            # replace a settled outcome (another runner finished this activity), or the
            # next cycle would upload the activity a second time. One statement, so the
            # check and the write are one step.
            cursor = conn.execute(
                _PUT_INTENT, (pk, sk, dumps(body), sort_key, gsi1pk, gsi1sk, _SETTLED)
            )
            written = cursor.rowcount == 1
        if not written:
            raise codec.intent_refused(entry.garmin_activity_id)

    def _raise_ledger_version(self, conn: sqlite3.Connection, pk: str) -> None:
        mark = codec.ledger_mark_from_item(self._rows.get_body_in(conn, pk, codec.LEDGER_MARK_SK))
        self._rows.put(conn, pk, codec.LEDGER_MARK_SK, {"version": mark.version + 1})

    def ledger_mark(self, user_id: str) -> LedgerMark | None:
        return codec.ledger_mark_from_item(
            self._rows.get_body(codec.user_pk(user_id), codec.LEDGER_MARK_SK)
        )

    def mark_idle(self, user_id: str, mark: LedgerMark) -> bool:
        pk = codec.user_pk(user_id)
        with self._rows.write() as conn:
            stored = codec.ledger_mark_from_item(
                self._rows.get_body_in(conn, pk, codec.LEDGER_MARK_SK)
            )
            if stored.version != mark.version:  # a ledger write came since it was read
                return False
            body = {
                "version": mark.version,
                "idleKey": mark.idle_key or "",
                "idleUntil": codec.format_time(mark.idle_until) if mark.idle_until else "",
            }
            self._rows.put(conn, pk, codec.LEDGER_MARK_SK, body)
            return True

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        rows = self._rows.query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= 'UPLOAD#' AND lsi1sk < 'UPLOAD$' "
            "ORDER BY lsi1sk DESC LIMIT ?",
            (codec.user_pk(user_id), limit),
        )
        return [codec.ledger_from_item(loads(row[0])) for row in rows]

    def list_unsettled_uploads(self, user_id: str) -> list[LedgerEntry]:
        """Oldest Garmin start first, the order the uploader works in."""
        rows = self._rows.query(
            "SELECT body FROM items WHERE gsi1pk = ? ORDER BY gsi1sk",
            (codec.unsettled_gsi1pk(user_id),),
        )
        return [codec.ledger_from_item(loads(row[0])) for row in rows]
