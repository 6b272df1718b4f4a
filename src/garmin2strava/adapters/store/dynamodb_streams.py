"""Activity streams in the store's DynamoDB table, under its 400 KB item limit.

An activity's streams are JSON compressed with zlib (blobs.py) and cut into parts of
at most `PART_BYTES`, one item each: `USER#{id}` / `STREAMS#STRAVA#{activityId}#{part}`
(a six-hour ride at one sample a second is about 1.7 MB of JSON for eight streams,
some 600 KB compressed: two parts). Part 0000 is the head: it carries the number of
parts and their digest, and is written last, so a reader never joins a half-written
set; an interrupted write leaves no head and the activity stays pending.

Pending fetches are items `STREAMS_PENDING#{activityId}` (ids zero-padded, so a Query
lists them in id order), with `failures` (failed reads so far) and `retryAt` (not
listed as due before it) once a read failed. The head keeps a `note` when the reads
were given up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from garmin2strava.adapters.store import blobs, codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.domain.streams import ActivityStreams, PendingStreams

__all__ = ["PART_BYTES", "STREAM_PREFIXES", "StreamItems", "streams_prefix"]

PART_BYTES = 350_000  # below 400 KB with room for the keys and the head's attributes
_PENDING_PREFIX = "STREAMS_PENDING#"
# Every item of this module starts with one of these (an account's data deletion).
STREAM_PREFIXES = ("STREAMS#STRAVA#", _PENDING_PREFIX)
_ID_WIDTH = 20


def streams_prefix(activity_id: int) -> str:
    # The trailing '#': activity 12's parts never match activity 123's prefix.
    return f"STREAMS#STRAVA#{activity_id}#"


def _part_sk(activity_id: int, part: int) -> str:
    return f"{streams_prefix(activity_id)}{part:04d}"


def _pending_sk(activity_id: int) -> str:
    return f"{_PENDING_PREFIX}{activity_id:0{_ID_WIDTH}d}"


class StreamItems:
    """ports.StreamStore, mixed into DynamoDBStore (which gives `_table`)."""

    _table: TableAccess

    def put_streams(self, streams: ActivityStreams) -> None:
        pk = codec.user_pk(streams.user_id)
        blob = blobs.pack(streams.streams)
        parts = blobs.split(blob, PART_BYTES)
        for n, chunk in enumerate(parts[1:], start=1):
            self._table.put({"PK": pk, "SK": _part_sk(streams.activity_id, n), "chunk": chunk})
        head = {
            "PK": pk,
            "SK": _part_sk(streams.activity_id, 0),
            "userId": streams.user_id,
            "activityId": streams.activity_id,
            "fetchedAt": codec.format_time(streams.fetched_at),
            "types": list(streams.streams),
            "parts": len(parts),
            "digest": blobs.digest(blob),
            "chunk": parts[0],
        }
        if streams.note is not None:
            head["note"] = streams.note
        self._table.put(head)  # last: from now on the parts are readable
        self._table.call(
            "delete_item",
            Key={"PK": {"S": pk}, "SK": {"S": _pending_sk(streams.activity_id)}},
        )

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        items = list(
            self._table.query(
                KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
                ExpressionAttributeValues={
                    ":pk": {"S": codec.user_pk(user_id)},
                    ":prefix": {"S": streams_prefix(activity_id)},
                },
                ConsistentRead=True,
            )
        )
        by_part = {int(str(item["SK"]).rsplit("#", 1)[1]): item for item in items}
        head = by_part.get(0)
        if head is None or "parts" not in head:
            return None  # never fetched, or its write did not finish
        count = int(head["parts"])
        chunks = [_chunk(by_part[n]) for n in range(count) if n in by_part]
        blob = blobs.join_parts(chunks, count=count, expected_digest=str(head["digest"]))
        return ActivityStreams(
            user_id=user_id,
            activity_id=activity_id,
            fetched_at=codec.parse_time(str(head["fetchedAt"])),
            streams=dict(blobs.unpack(blob)),
            note=None if head.get("note") is None else str(head["note"]),
        )

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        pk = codec.user_pk(user_id)
        if self._table.get(pk, _part_sk(activity_id, 0), ["parts"]) is not None:
            return  # fetched already: streams are read once
        # A mark that exists keeps its failures and retry time (a budget deferral).
        self._table.put_if(
            {"PK": pk, "SK": _pending_sk(activity_id), "activityId": activity_id},
            "attribute_not_exists(PK)",
        )

    def mark_streams_failed(
        self, user_id: str, activity_id: int, *, failures: int, retry_at: datetime
    ) -> None:
        pk = codec.user_pk(user_id)
        if self._table.get(pk, _part_sk(activity_id, 0), ["parts"]) is not None:
            return  # fetched already: streams are read once
        self._table.put(
            {
                "PK": pk,
                "SK": _pending_sk(activity_id),
                "activityId": activity_id,
                "failures": failures,
                "retryAt": codec.format_time(retry_at),
            }
        )

    def get_pending_streams(self, user_id: str, activity_id: int) -> PendingStreams | None:
        item = self._table.get(codec.user_pk(user_id), _pending_sk(activity_id))
        if item is None:
            return None
        retry_at = item.get("retryAt")
        return PendingStreams(
            activity_id=activity_id,
            failures=int(item.get("failures") or 0),
            retry_at=None if retry_at is None else codec.parse_time(str(retry_at)),
        )

    def list_pending_streams(
        self, user_id: str, *, limit: int = 100, due_at: datetime | None = None
    ) -> list[int]:
        if limit <= 0:
            return []
        values: dict[str, Any] = {
            ":pk": {"S": codec.user_pk(user_id)},
            ":prefix": {"S": _PENDING_PREFIX},
        }
        due: dict[str, Any] = {}
        if due_at is not None:  # fixed-width UTC text (codec.format_time): string order
            values[":due"] = {"S": codec.format_time(due_at)}
            due["FilterExpression"] = "attribute_not_exists(retryAt) OR retryAt <= :due"
        items = self._table.query(
            limit=limit,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=values,
            ConsistentRead=True,
            **due,
        )
        return [int(item["activityId"]) for item in items]


def _chunk(item: dict[str, Any]) -> bytes:
    value = item.get("chunk", b"")
    return bytes(value)
