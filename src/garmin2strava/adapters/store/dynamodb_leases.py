"""The per-user sync lease in the store's DynamoDB table: one `LEASE` item, taken and
released by conditional writes; TTL on `expiresAt` only cleans up."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key

__all__ = ["LeaseItems"]


class LeaseItems:
    """ports.SyncLeases, mixed into DynamoDBStore (which gives `_table`)."""

    _table: TableAccess

    def acquire_lease(self, user_id: str, owner: str, *, now: datetime, ttl_seconds: int) -> bool:
        until = now + timedelta(seconds=ttl_seconds)
        item = {
            "PK": codec.user_pk(user_id),
            "SK": codec.LEASE_SK,
            "owner": owner,
            "leaseUntil": codec.format_time(until),  # fixed width: string order is time order
            "expiresAt": math.ceil(until.timestamp()),  # TTL clean-up only
        }
        # The lease: take it when nobody holds it, when the holder's lease has run out,
        # or when we hold it already (a renewal). Never from a live holder.
        return self._table.put_if(
            item,
            "attribute_not_exists(PK) OR #until <= :now OR #owner = :owner",
            ExpressionAttributeNames={"#until": "leaseUntil", "#owner": "owner"},
            ExpressionAttributeValues={
                ":now": {"S": codec.format_time(now)},
                ":owner": {"S": owner},
            },
        )

    def release_lease(self, user_id: str, owner: str) -> None:
        # Only the holder releases: a late release after expiry and takeover must
        # not free the new holder's lease.
        self._table.call_if(
            "delete_item",
            Key=key(codec.user_pk(user_id), codec.LEASE_SK),
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": {"S": owner}},
        )
