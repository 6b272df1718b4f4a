"""The workouts mirror in the store's DynamoDB table: `WORKOUT#` items, read by start
time through LSI1 under a cap on the items a read may inspect.

A raw activity JSON is kept as a map (`raw`) while it is small. DynamoDB refuses an
item over 400 KB, and a long activity's detail (laps, splits, segment efforts, best
efforts) can be bigger: over `RAW_INLINE_BYTES` of JSON the item keeps it compressed
instead (`rawZ`, blobs.py), and when even that is over `PART_BYTES` the compressed
bytes go to part items `WORKOUT#STRAVA#{id}#RAW#{digest}#{n}` (no LSI1SK: they are in
no index), written before the row that names them (`rawParts`, `rawDigest`). Parts
carry the digest in their key, so a row and its parts always agree; the parts of the
row a write replaced are deleted after it. Rows stored before this keep `raw` and read
as they always did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from garmin2strava.adapters.store import blobs, codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import deserialize, key, serialize
from garmin2strava.adapters.store.dynamodb_streams import PART_BYTES
from garmin2strava.adapters.store.dynamodb_table import LSI1
from garmin2strava.domain.models import Workout

__all__ = ["MAX_WORKOUTS", "RAW_INLINE_BYTES", "WorkoutItems"]

RAW_INLINE_BYTES = 256 * 1024  # raw JSON up to this stays a readable map
MAX_WORKOUTS = 3000  # the guardrail on workouts one read may inspect (read at each call)


class WorkoutItems:
    """ports.WorkoutMirror and WorkoutQueries, mixed into DynamoDBStore (which gives
    `_table`). Reads inspect at most MAX_WORKOUTS items, counting rows a filter drops."""

    _table: TableAccess

    def upsert_workout(self, workout: Workout) -> bool:
        item = {
            "PK": codec.user_pk(workout.user_id),
            "SK": codec.workout_sk(workout.activity_id),
            **codec.workout_to_item(workout),
            "LSI1SK": codec.workout_lsi1sk(workout.start_utc, workout.activity_id),
        }
        self._shrink_raw(item)
        # Events arrive out of order: an older event or fetch never overwrites a newer
        # row (updatedAt is fixed-width ISO UTC, so string order is time order).
        answer = self._table.call_if(
            "put_item",
            Item=serialize(item),
            ConditionExpression="attribute_not_exists(PK) OR updatedAt <= :updated",
            ExpressionAttributeValues={":updated": {"S": codec.format_time(workout.updated_at)}},
            ReturnValues="ALL_OLD",
        )
        if answer is None:
            # Lost to a newer row: the parts just written are ours alone unless that
            # row holds the same raw JSON (same digest, same part keys).
            newer = self._table.get(item["PK"], item["SK"], ["rawDigest"]) or {}
            if item.get("rawDigest") and newer.get("rawDigest") != item["rawDigest"]:
                self._delete_raw_parts(item["PK"], workout.activity_id, item)
            return False
        old = deserialize(answer.get("Attributes") or {})
        if old.get("rawDigest") and old.get("rawDigest") != item.get("rawDigest"):
            self._delete_raw_parts(item["PK"], workout.activity_id, old)
        return True

    def _shrink_raw(self, item: dict[str, Any]) -> None:
        """Compress (and split) a raw JSON too big for the item, in place."""
        raw = item.get("raw")
        if raw is None or len(json.dumps(raw, separators=(",", ":"))) <= RAW_INLINE_BYTES:
            return
        blob = blobs.pack(raw)
        del item["raw"]
        if len(blob) <= PART_BYTES:
            item["rawZ"] = blob
            return
        parts = blobs.split(blob, PART_BYTES)
        item["rawDigest"] = blobs.digest(blob)
        item["rawParts"] = len(parts)
        for n, chunk in enumerate(parts):
            part_sk = _raw_part_sk(int(item["activityId"]), item["rawDigest"], n)
            self._table.put({"PK": item["PK"], "SK": part_sk, "chunk": chunk})

    def _delete_raw_parts(self, pk: str, activity_id: int, old: dict[str, Any]) -> None:
        for n in range(int(old.get("rawParts") or 0)):
            part_sk = _raw_part_sk(activity_id, str(old["rawDigest"]), n)
            self._table.call("delete_item", Key=key(pk, part_sk))

    def _workout(self, item: dict[str, Any]) -> Workout:
        """The row as codec reads it, with a compressed or split raw JSON put back."""
        if "rawZ" in item:
            item["raw"] = blobs.unpack(bytes(item.pop("rawZ")))
        elif "rawParts" in item:
            activity_id, digest = int(item["activityId"]), str(item["rawDigest"])
            chunks = []
            for n in range(int(item["rawParts"])):
                part = self._table.get(str(item["PK"]), _raw_part_sk(activity_id, digest, n))
                if part is not None:
                    chunks.append(bytes(part["chunk"]))
            count = int(item["rawParts"])
            item["raw"] = blobs.unpack(
                blobs.join_parts(chunks, count=count, expected_digest=digest)
            )
        return codec.workout_from_item(item)

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        item = self._table.get(codec.user_pk(user_id), codec.workout_sk(activity_id))
        return None if item is None else self._workout(item)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = 3000
    ) -> list[Workout]:
        """Newest start first, at most `limit`, reading at most MAX_WORKOUTS items."""
        max_read = MAX_WORKOUTS
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
        return [self._workout(item) for item in items]

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first,
        reading at most MAX_WORKOUTS items."""
        items = self._table.query(
            inspect=MAX_WORKOUTS,
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
        return [self._workout(item) for item in items]

    def iter_workouts(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        include_deleted: bool = False,
        page_size: int = 500,
    ) -> Iterator[Workout]:
        """Oldest start first, one Query page (`page_size` items, at most 1 MB) at a time:
        no MAX_WORKOUTS cap, memory stays flat."""
        kwargs: dict[str, Any] = {
            "Limit": page_size,
            "IndexName": LSI1,
            "KeyConditionExpression": "PK = :pk AND LSI1SK BETWEEN :low AND :high",
            "ExpressionAttributeValues": {
                ":pk": {"S": codec.user_pk(user_id)},
                ":low": {"S": codec.workout_lsi1sk(since) if since else "WORKOUT#"},
                ":high": {"S": "WORKOUT$"},
            },
        }
        if not include_deleted:
            kwargs["FilterExpression"] = "isDeleted = :false"
            kwargs["ExpressionAttributeValues"][":false"] = {"BOOL": False}
        for item in self._table.query(**kwargs):
            yield self._workout(item)


def _raw_part_sk(activity_id: int, digest: str, part: int) -> str:
    return f"{codec.workout_sk(activity_id)}#RAW#{digest}#{part:04d}"
