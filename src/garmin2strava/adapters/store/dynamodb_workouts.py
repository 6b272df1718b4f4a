"""The workouts mirror in the store's DynamoDB table: `WORKOUT#` items, read by start
time through LSI1 under a cap on the items a read may inspect."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_table import LSI1
from garmin2strava.domain.models import Workout

__all__ = ["WorkoutMirror"]


class WorkoutMirror:
    """Reads take `max_read`, the guardrail on items one read may inspect (counting
    rows a filter drops), from the caller."""

    def __init__(self, table: TableAccess) -> None:
        self._table = table

    def upsert_workout(self, workout: Workout) -> bool:
        item = {
            "PK": codec.user_pk(workout.user_id),
            "SK": codec.workout_sk(workout.activity_id),
            **codec.workout_to_item(workout),
            "LSI1SK": codec.workout_lsi1sk(workout.start_date, workout.activity_id),
        }
        # Events arrive out of order: an older event or fetch never overwrites a newer
        # row (updatedAt is fixed-width ISO UTC, so string order is time order).
        return self._table.put_if(
            item,
            "attribute_not_exists(PK) OR updatedAt <= :updated",
            ExpressionAttributeValues={":updated": {"S": codec.format_time(workout.updated_at)}},
        )

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        item = self._table.get(codec.user_pk(user_id), codec.workout_sk(activity_id))
        return None if item is None else codec.workout_from_item(item)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool, limit: int, max_read: int
    ) -> list[Workout]:
        """Newest start first, at most `limit`, reading at most `max_read` items."""
        limit = min(limit, max_read)
        if limit <= 0:
            return []
        kwargs: dict[str, Any] = {
            "IndexName": LSI1,
            "KeyConditionExpression": "PK = :pk AND begins_with(LSI1SK, :prefix)",
            "ExpressionAttributeValues": {
                ":pk": {"S": codec.user_pk(user_id)},
                ":prefix": {"S": "WORKOUT#"},
            },
            "ScanIndexForward": False,
        }
        if not include_deleted:
            kwargs["FilterExpression"] = "isDeleted = :false"
            kwargs["ExpressionAttributeValues"][":false"] = {"BOOL": False}
        items = self._table.query(limit=limit, inspect=max_read, **kwargs)
        return [codec.workout_from_item(item) for item in items]

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime, *, max_read: int
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first,
        reading at most `max_read` items."""
        items = self._table.query(
            inspect=max_read,
            IndexName=LSI1,
            KeyConditionExpression="PK = :pk AND LSI1SK BETWEEN :low AND :high",
            FilterExpression="isDeleted = :false",
            ExpressionAttributeValues={
                ":pk": {"S": codec.user_pk(user_id)},
                ":low": {"S": codec.workout_lsi1sk(start)},
                ":high": {"S": codec.workout_lsi1sk(end) + "$"},  # '$' sorts after '#id'
                ":false": {"BOOL": False},
            },
        )
        return [codec.workout_from_item(item) for item in items]
