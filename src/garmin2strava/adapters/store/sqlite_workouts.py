"""The workouts mirror in the SQLite store: `WORKOUT#` rows, read by start time through
the `lsi1sk` column (LSI1 in DynamoDB); an older write never replaces a newer row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.sqlite_access import RowAccess, loads
from garmin2strava.domain.models import Workout

__all__ = ["WorkoutRows"]


class WorkoutRows:
    """ports.WorkoutMirror's writes and ports.WorkoutQueries, mixed into SqliteStore
    (which gives `_rows`, and deletes an account's rows in forget_strava_data)."""

    _rows: RowAccess

    def upsert_workout(self, workout: Workout) -> bool:
        pk = codec.user_pk(workout.user_id)
        sk = codec.workout_sk(workout.activity_id)
        with self._rows.write() as conn:
            row = self._rows.get_row(conn, pk, sk)
            # Condition: an older event or fetch never overwrites a newer row.
            if row is not None:
                stored_at = codec.parse_time(str(loads(row[0])["updatedAt"]))
                if stored_at > workout.updated_at:
                    return False
            self._rows.put(
                conn,
                pk,
                sk,
                codec.workout_to_item(workout),
                lsi1sk=codec.workout_lsi1sk(workout.start_utc, workout.activity_id),
            )
            return True

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        body = self._rows.get_body(codec.user_pk(user_id), codec.workout_sk(activity_id))
        return None if body is None else codec.workout_from_item(body)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = 3000
    ) -> list[Workout]:
        """Newest start first."""
        rows = self._rows.query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= 'WORKOUT#' "
            "AND lsi1sk < 'WORKOUT$' AND (? OR json_extract(body, '$.isDeleted') = 0) "
            "ORDER BY lsi1sk DESC LIMIT ?",
            (codec.user_pk(user_id), include_deleted, limit),
        )
        return [codec.workout_from_item(loads(row[0])) for row in rows]

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first."""
        rows = self._rows.query(
            "SELECT body FROM items WHERE pk = ? AND lsi1sk >= ? AND lsi1sk < ? "
            "AND json_extract(body, '$.isDeleted') = 0 ORDER BY lsi1sk",
            (
                codec.user_pk(user_id),
                codec.workout_lsi1sk(start),
                codec.workout_lsi1sk(end) + "$",  # '$' sorts after the '#id' suffix
            ),
        )
        return [codec.workout_from_item(loads(row[0])) for row in rows]

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
            rows = self._rows.query(
                "SELECT lsi1sk, body FROM items WHERE pk = ? AND lsi1sk >= ? "
                "AND lsi1sk < 'WORKOUT$' AND (? OR json_extract(body, '$.isDeleted') = 0) "
                "ORDER BY lsi1sk LIMIT ?",
                (codec.user_pk(user_id), after, include_deleted, page_size),
            )
            for _, body in rows:
                yield codec.workout_from_item(loads(body))
            if len(rows) < page_size:
                return
            after = str(rows[-1][0]) + "\x00"  # just past the last key read
