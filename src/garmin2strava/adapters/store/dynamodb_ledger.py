"""The upload ledger in the store's DynamoDB table: `UPLOAD#` items, newest first
through LSI1, unsettled ones through the sparse GSI1, the conditional write of an
upload intent, and the account's `LEDGER#MARK` (domain/idle.py): its version is raised
before every ledger write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key
from garmin2strava.adapters.store.dynamodb_table import GSI1, LSI1
from garmin2strava.domain.idle import LedgerMark
from garmin2strava.domain.models import LedgerEntry, UploadOutcome

__all__ = ["LedgerItems"]


class LedgerItems:
    """ports.UploadLedger, mixed into DynamoDBStore (which gives `_table`)."""

    _table: TableAccess

    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]:
        pk = codec.user_pk(user_id)
        items = self._table.batch_get([(pk, codec.upload_sk(gid)) for gid in garmin_ids])
        entries = (codec.ledger_from_item(item) for item in items)
        return {entry.garmin_activity_id: entry for entry in entries}

    def put_upload(self, entry: LedgerEntry) -> None:
        """Raises StoreConflict when an intent (pending) would overwrite a settled entry."""
        sort_key = codec.ledger_lsi1sk(entry)
        item: dict[str, Any] = {
            "PK": codec.user_pk(entry.user_id),
            "SK": codec.upload_sk(entry.garmin_activity_id),
            **codec.ledger_to_item(entry),
            "LSI1SK": sort_key,
        }
        if codec.in_uploaders_index(entry):
            # Sparse index: only entries the uploader still has to finish are in it.
            item["GSI1PK"] = codec.unsettled_gsi1pk(entry.user_id)
            item["GSI1SK"] = sort_key
        self._raise_ledger_version(entry.user_id)
        if entry.outcome is not UploadOutcome.PENDING:
            self._table.put(item)
            return
        # The intent record, written before the upload request: it must never replace
        # a settled outcome (another runner finished this activity), or the next cycle
        # would upload the activity a second time.
        settled = {f":s{i}": {"S": value} for i, value in enumerate(codec.SETTLED_OUTCOMES)}
        written = self._table.put_if(
            item,
            f"attribute_not_exists(PK) OR NOT (#outcome IN ({', '.join(settled)}))",
            ExpressionAttributeNames={"#outcome": "outcome"},
            ExpressionAttributeValues=settled,
        )
        if not written:
            raise codec.intent_refused(entry.garmin_activity_id)

    def _raise_ledger_version(self, user_id: str) -> None:
        # Before the write, and the idle finding erased with it: a crash between the two
        # leaves a finding erased for nothing (one full check more), never a changed
        # ledger under a standing finding.
        self._table.call(
            "update_item",
            Key=key(codec.user_pk(user_id), codec.LEDGER_MARK_SK),
            UpdateExpression="ADD #version :one REMOVE idleKey, idleUntil",
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    def ledger_mark(self, user_id: str) -> LedgerMark | None:
        item = self._table.get(codec.user_pk(user_id), codec.LEDGER_MARK_SK)
        return codec.ledger_mark_from_item(item)

    def mark_idle(self, user_id: str, mark: LedgerMark) -> bool:
        values: dict[str, Any] = {
            ":key": {"S": mark.idle_key or ""},
            ":until": {"S": codec.format_time(mark.idle_until) if mark.idle_until else ""},
        }
        if mark.version == 0:  # no ledger write yet (or a store from before the mark)
            condition = "attribute_not_exists(#version)"
        else:
            condition = "#version = :version"
            values[":version"] = {"N": str(mark.version)}
        answer = self._table.call_if(
            "update_item",
            Key=key(codec.user_pk(user_id), codec.LEDGER_MARK_SK),
            UpdateExpression="SET idleKey = :key, idleUntil = :until",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues=values,
        )
        return answer is not None

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        """Newest Garmin start first (then id), through LSI1."""
        if limit <= 0:
            return []
        items = self._table.query(
            limit=limit,
            IndexName=LSI1,
            KeyConditionExpression="PK = :pk AND begins_with(LSI1SK, :prefix)",
            ExpressionAttributeValues={
                ":pk": {"S": codec.user_pk(user_id)},
                ":prefix": {"S": "UPLOAD#"},
            },
            ScanIndexForward=False,
            Limit=min(limit, 1000),
        )
        return [codec.ledger_from_item(item) for item in items]

    def list_unsettled_uploads(self, user_id: str) -> list[LedgerEntry]:
        """Oldest Garmin start first, the order the uploader works in (sparse GSI1)."""
        items = self._table.query(
            IndexName=GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": {"S": codec.unsettled_gsi1pk(user_id)}},
        )
        return [codec.ledger_from_item(item) for item in items]
