"""The per-user sync lease in the SQLite store: one `LEASE` row, taken and released
under the same conditions as DynamoDB's conditional writes; `expires_at` only cleans up."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite_access import RowAccess, loads

__all__ = ["LeaseRows"]


class LeaseRows:
    """ports.SyncLeases, mixed into SqliteStore (which gives `_rows`)."""

    _rows: RowAccess

    def acquire_lease(self, user_id: str, owner: str, *, now: datetime, ttl_seconds: int) -> bool:
        pk = codec.user_pk(user_id)
        expires = now + timedelta(seconds=ttl_seconds)
        with self._rows.write() as conn:
            row = self._rows.get_row(conn, pk, codec.LEASE_SK)
            if row is not None:
                held = loads(row[0])
                # Condition: free, expired, or already ours (a renewal).
                still_valid = codec.parse_time(str(held["expiresAt"])) > now
                if still_valid and held["owner"] != owner:
                    return False
            self._rows.put(
                conn,
                pk,
                codec.LEASE_SK,
                {"owner": owner, "expiresAt": codec.format_time(expires)},
                expires_at=math.ceil(expires.timestamp()),
            )
            return True

    def release_lease(self, user_id: str, owner: str) -> None:
        with self._rows.write() as conn:
            # Condition: only the holder releases; a late release after expiry and
            # takeover must not free someone else's lease.
            conn.execute(
                "DELETE FROM items WHERE pk = ? AND sk = ? AND json_extract(body, '$.owner') = ?",
                (codec.user_pk(user_id), codec.LEASE_SK, owner),
            )
