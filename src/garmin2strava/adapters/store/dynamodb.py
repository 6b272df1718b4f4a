"""ports.Store on one DynamoDB table: the items of DESIGN.md "Data model", no Scan.

Keys and attribute bodies come from codec.py, shared with the SQLite store, so both
hold the same items. What this module adds:

- Secondary indexes, created by `create_table` (dynamodb_table.py; terraform must
  declare the same ones, and an LSI only at table creation):
  - `LSI1` (local, on PK, sort key `LSI1SK`, projection ALL): workouts by start time
    and the ledger newest first. We chose an index over a bounded Query of
    `WORKOUT#` items because matching asks for a window of minutes in a mirror of
    years: the index reads only the workouts in the window (consistent reads work on
    an LSI, too). Workout reads stop after `MAX_WORKOUTS` (3,000) items read,
    counting rows a filter drops (deleted workouts). The
    cost is the 10 GB per-user item collection limit of an LSI, far above what one
    person's runs and ledger take.
  - `GSI1` (global, sparse, projection ALL): only unsettled ledger entries carry
    `GSI1PK`/`GSI1SK`, so `list_unsettled_uploads` reads just those. A GSI is
    eventually consistent; a just-written entry may show up a moment later, which
    the next sync cycle absorbs.
- TTL on `expiresAt` (epoch seconds): audit events, and the lease (harmless: an
  expired lease is free anyway). DynamoDB deletes expired items up to days late, so
  reads filter them out too.
- Tokens are one Binary attribute `ciphertext` (TokenCipher, context f"{PK}/{SK}")
  and a Number `version` for compare-and-swap.
- `list_accounts` queries the registry items `ACCOUNTS`/`USER#{id}` (written in the
  same transaction as the account) and batch-gets the accounts.
- Application state: `APP`/`STATE#{key}` with the dict in the `value` attribute.
- Conditional writes: the lease, token compare-and-swap (versions survive deletion
  in a tombstone), workouts (older `updatedAt` never overwrites newer), and the
  ledger's intent: a `pending` entry never replaces a settled one (StoreConflict).

Errors: throttling, 5xx and network failures raise TransientError; messages carry the
operation and AWS error code, never attribute values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from garmin2strava.adapters.aws import error_code, is_transient, transient_error
from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_table import GSI1, LSI1, create_table
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    LedgerEntry,
    UploadOutcome,
    Workout,
)
from garmin2strava.errors import StoreConflict, TransientError
from garmin2strava.ports import TokenCipher

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["MAX_WORKOUTS", "DynamoDBStore", "create_table"]

MAX_WORKOUTS = 3000  # the guardrail on workouts one operation may read
_BATCH_GET_MAX = 100  # BatchGetItem's limit on keys per request
_BATCH_ATTEMPTS = 6
_CONDITION_FAILED = "ConditionalCheckFailedException"
_SETTLED = tuple(sorted(o.value for o in UploadOutcome if o.settled))

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


# -- attribute values -------------------------------------------------------------------
def _to_dynamo(value: Any) -> Any:
    """Plain JSON values -> what TypeSerializer takes (floats become Decimal)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = "DynamoDB cannot store NaN or infinity"
            raise ValueError(msg)
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """Deserialized values -> plain JSON values (Decimal becomes int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def _serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in item.items()}


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    # Binary (the token ciphertext) is taken as the bytes the client returns, not
    # wrapped in boto3's Binary.
    return {
        k: v["B"] if "B" in v else _from_dynamo(_deserializer.deserialize(v))
        for k, v in item.items()
    }


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


class DynamoDBStore(TokenItems):
    """ports.Store on one table; `client=None` builds a default boto3 client (which
    honours AWS_ENDPOINT_URL_DYNAMODB)."""

    def __init__(
        self, table_name: str, cipher: TokenCipher, *, client: DynamoDBClient | None = None
    ) -> None:
        self._table = table_name
        self._cipher = cipher
        self._client: DynamoDBClient = client if client is not None else boto3.client("dynamodb")

    def __repr__(self) -> str:
        return f"DynamoDBStore({self._table!r})"

    # -- plumbing ---------------------------------------------------------------------
    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One client call; transient failures become TransientError."""
        try:
            return getattr(self._client, operation)(TableName=self._table, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            if is_transient(exc):
                raise transient_error(f"DynamoDB {operation}", exc) from exc
            raise

    def _put_if(self, item: dict[str, Any], condition: str, **names_values: Any) -> bool:
        """PutItem under `condition`; False when the condition does not hold."""
        try:
            self._call(
                "put_item", Item=_serialize(item), ConditionExpression=condition, **names_values
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def _get(self, pk: str, sk: str, projection: Sequence[str] = ()) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Key": _key(pk, sk), "ConsistentRead": True}
        if projection:
            kwargs.update(_projection(projection))
        answer = self._call("get_item", **kwargs)
        item = answer.get("Item")
        return None if item is None else _deserialize(item)

    def _query(
        self, *, limit: int | None = None, inspect: int | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item a Query returns, page after page, stopping after `limit` items or
        once `inspect` items have been read before filtering (the read guardrail)."""
        seen = inspected = 0
        while True:
            if inspect is not None:
                kwargs["Limit"] = inspect - inspected
            page = self._call("query", **kwargs)
            inspected += int(page.get("ScannedCount", 0))
            for item in page.get("Items", []):
                yield _deserialize(item)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            last = page.get("LastEvaluatedKey")
            if not last or (inspect is not None and inspected >= inspect):
                return
            kwargs["ExclusiveStartKey"] = last

    def _batch_get(
        self, keys: Sequence[tuple[str, str]], projection: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, retrying UnprocessedKeys with backoff."""
        unique = list(dict.fromkeys(keys))
        found: list[dict[str, Any]] = []
        for start in range(0, len(unique), _BATCH_GET_MAX):
            request: dict[str, Any] = {
                "Keys": [_key(pk, sk) for pk, sk in unique[start : start + _BATCH_GET_MAX]],
                "ConsistentRead": True,
            }
            if projection:
                request.update(_projection(projection))
            found.extend(self._batch_get_chunk(request))
        return found

    def _batch_get_chunk(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        pending: dict[str, Any] = {self._table: request}
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                answer = self._client.batch_get_item(RequestItems=pending)
            except (BotoCoreError, ClientError) as exc:
                if is_transient(exc):
                    raise transient_error("DynamoDB batch_get_item", exc) from exc
                raise
            found.extend(_deserialize(i) for i in answer.get("Responses", {}).get(self._table, []))
            pending = dict(answer.get("UnprocessedKeys") or {})
            if not pending:
                return found
            time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off, then retry the rest
        msg = "DynamoDB batch_get_item: keys still unprocessed after retries"
        raise TransientError(msg)

    # -- accounts ---------------------------------------------------------------------
    def get_account(self, user_id: str) -> Account | None:
        item = self._get(codec.user_pk(user_id), codec.ACCOUNT_SK)
        return None if item is None else codec.account_from_item(item)

    def put_account(self, account: Account) -> None:
        pk = codec.user_pk(account.user_id)
        account_item = {"PK": pk, "SK": codec.ACCOUNT_SK, **codec.account_to_item(account)}
        registry_item = {"PK": codec.ACCOUNTS_PK, "SK": pk, "userId": account.user_id}
        # One transaction: list_accounts never sees a registry entry without its account.
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": self._table, "Item": _serialize(account_item)}},
                    {"Put": {"TableName": self._table, "Item": _serialize(registry_item)}},
                ]
            )
        except (BotoCoreError, ClientError) as exc:
            # A transaction of unconditional puts is cancelled only by a concurrent one.
            cancelled = isinstance(exc, ClientError) and (
                error_code(exc) == "TransactionCanceledException"
            )
            if is_transient(exc) or cancelled:
                raise transient_error("DynamoDB transact_write_items", exc) from exc
            raise

    def list_accounts(self) -> list[Account]:
        registry = self._query(
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": codec.ACCOUNTS_PK}},
            ProjectionExpression="SK",
        )
        keys = [(str(item["SK"]), codec.ACCOUNT_SK) for item in registry]
        accounts = [codec.account_from_item(item) for item in self._batch_get(keys)]
        return sorted(accounts, key=lambda a: codec.user_pk(a.user_id))

    def link_athlete(self, athlete_id: int, user_id: str) -> None:
        item = {
            "PK": codec.athlete_pk(athlete_id),
            "SK": codec.ATHLETE_USER_SK,
            "athleteId": athlete_id,
            "userId": user_id,
        }
        self._call("put_item", Item=_serialize(item))

    def user_for_athlete(self, athlete_id: int) -> str | None:
        item = self._get(codec.athlete_pk(athlete_id), codec.ATHLETE_USER_SK, ["userId"])
        return None if item is None else str(item["userId"])

    # -- tokens -------------------------------------------------------------------------
    def _read_secret(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        item = self._get(pk, sk, ["ciphertext", "version"])
        if item is None or "ciphertext" not in item:  # nothing, or a deletion tombstone
            return None
        plaintext = self._cipher.decrypt(item["ciphertext"], context=f"{pk}/{sk}")
        return plaintext, int(item["version"])

    def _replace_secret(
        self, pk: str, sk: str, plaintext: bytes, expected_version: int | None
    ) -> int | None:
        """Returns the new version, or None when another writer changed the item first.

        Versions keep growing across deletions (the tombstone keeps the counter), so a
        writer holding a version from before a delete can never win afterwards.
        """
        sealed = self._cipher.encrypt(plaintext, context=f"{pk}/{sk}")
        values: dict[str, Any] = {":sealed": {"B": sealed}, ":zero": {"N": "0"}, ":one": {"N": "1"}}
        # Compare-and-swap: write only over the version the caller read (or, with None,
        # over nothing or a tombstone), so two refreshes racing never lose the newer
        # rotated token.
        if expected_version is None:
            condition = "attribute_not_exists(ciphertext)"
        else:
            condition = "attribute_exists(ciphertext) AND #version = :expected"
            values[":expected"] = {"N": str(expected_version)}
        try:
            answer = self._call(
                "update_item",
                Key=_key(pk, sk),
                UpdateExpression=(
                    "SET ciphertext = :sealed, #version = if_not_exists(#version, :zero) + :one "
                    "REMOVE deleted"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return None
            raise
        return int(answer["Attributes"]["version"]["N"])

    def delete_strava_tokens(self, user_id: str) -> None:
        """Forget the tokens, leaving a tombstone that keeps the version counter."""
        try:
            self._call(
                "update_item",
                Key=_key(codec.user_pk(user_id), codec.STRAVA_TOKEN_SK),
                UpdateExpression=(
                    "SET deleted = :true, #version = #version + :one REMOVE ciphertext"
                ),
                # Only an existing item becomes a tombstone; nothing stored stays nothing.
                ConditionExpression="attribute_exists(PK)",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":true": {"BOOL": True}, ":one": {"N": "1"}},
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    # -- upload ledger --------------------------------------------------------------------
    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]:
        pk = codec.user_pk(user_id)
        items = self._batch_get([(pk, codec.upload_sk(gid)) for gid in garmin_ids])
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
        if not entry.outcome.settled:
            # Sparse index: only entries the uploader still has to finish are in it.
            item["GSI1PK"] = codec.unsettled_gsi1pk(entry.user_id)
            item["GSI1SK"] = sort_key
        if entry.outcome is not UploadOutcome.PENDING:
            self._call("put_item", Item=_serialize(item))
            return
        # The intent record, written before the upload request: it must never replace
        # a settled outcome (another runner finished this activity), or the next cycle
        # would upload the activity a second time.
        settled = {f":s{i}": {"S": value} for i, value in enumerate(_SETTLED)}
        written = self._put_if(
            item,
            f"attribute_not_exists(PK) OR NOT (#outcome IN ({', '.join(settled)}))",
            ExpressionAttributeNames={"#outcome": "outcome"},
            ExpressionAttributeValues=settled,
        )
        if not written:
            msg = (
                f"ledger entry for Garmin activity {entry.garmin_activity_id} is already "
                "settled; not recording a new upload intent"
            )
            raise StoreConflict(msg)

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        """Newest Garmin start first (then id), through LSI1."""
        if limit <= 0:
            return []
        items = self._query(
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
        items = self._query(
            IndexName=GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": {"S": codec.unsettled_gsi1pk(user_id)}},
        )
        return [codec.ledger_from_item(item) for item in items]

    # -- sync lease -----------------------------------------------------------------------
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
        return self._put_if(
            item,
            "attribute_not_exists(PK) OR #until <= :now OR #owner = :owner",
            ExpressionAttributeNames={"#until": "leaseUntil", "#owner": "owner"},
            ExpressionAttributeValues={
                ":now": {"S": codec.format_time(now)},
                ":owner": {"S": owner},
            },
        )

    def release_lease(self, user_id: str, owner: str) -> None:
        try:
            # Only the holder releases: a late release after expiry and takeover must
            # not free the new holder's lease.
            self._call(
                "delete_item",
                Key=_key(codec.user_pk(user_id), codec.LEASE_SK),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    # -- audit ----------------------------------------------------------------------------
    def add_audit(self, event: AuditEvent, *, retention_days: int = 7) -> None:
        item = {
            "PK": codec.user_pk(event.user_id),
            "SK": codec.audit_sk(event.at, event.event_id),
            **codec.audit_to_item(event),
            # The TTL attribute: DynamoDB deletes the event some time after this.
            "expiresAt": math.floor((event.at + timedelta(days=retention_days)).timestamp()),
        }
        self._call("put_item", Item=_serialize(item))

    def list_audit(self, user_id: str, *, limit: int = 100) -> list[AuditEvent]:
        """Newest first; expired events that TTL has not deleted yet are filtered out."""
        if limit <= 0:
            return []
        items = self._query(
            limit=limit,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            FilterExpression="attribute_not_exists(expiresAt) OR expiresAt > :now",
            # The event without its keys and TTL (names aliased: some are reserved words).
            **_projection(["userId", "at", "kind", "eventId", "detail"]),
            ExpressionAttributeValues={
                ":pk": {"S": codec.user_pk(user_id)},
                ":prefix": {"S": codec.AUDIT_PREFIX},
                ":now": {"N": str(int(time.time()))},
            },
            ScanIndexForward=False,
        )
        return [codec.audit_from_item(item) for item in items]

    # -- mirror ---------------------------------------------------------------------------
    def upsert_workout(self, workout: Workout) -> bool:
        item = {
            "PK": codec.user_pk(workout.user_id),
            "SK": codec.workout_sk(workout.activity_id),
            **codec.workout_to_item(workout),
            "LSI1SK": codec.workout_lsi1sk(workout.start_date, workout.activity_id),
        }
        # Events arrive out of order: an older event or fetch never overwrites a newer
        # row (updatedAt is fixed-width ISO UTC, so string order is time order).
        return self._put_if(
            item,
            "attribute_not_exists(PK) OR updatedAt <= :updated",
            ExpressionAttributeValues={":updated": {"S": codec.format_time(workout.updated_at)}},
        )

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        item = self._get(codec.user_pk(user_id), codec.workout_sk(activity_id))
        return None if item is None else codec.workout_from_item(item)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = MAX_WORKOUTS
    ) -> list[Workout]:
        """Newest start first, at most `limit`, reading at most MAX_WORKOUTS items."""
        limit = min(limit, MAX_WORKOUTS)
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
        items = self._query(limit=limit, inspect=MAX_WORKOUTS, **kwargs)
        return [codec.workout_from_item(item) for item in items]

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first,
        reading at most MAX_WORKOUTS items."""
        items = self._query(
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
        return [codec.workout_from_item(item) for item in items]

    # -- application-wide state -------------------------------------------------------------
    def get_app_state(self, key: str) -> dict[str, Any] | None:
        item = self._get(codec.APP_STATE_PK, codec.app_state_sk(key), ["value"])
        if item is None:
            return None
        value = item.get("value")
        return dict(value) if isinstance(value, dict) else {}

    def put_app_state(self, key: str, value: dict[str, Any]) -> None:
        item = {"PK": codec.APP_STATE_PK, "SK": codec.app_state_sk(key), "value": value}
        self._call("put_item", Item=_serialize(item))


def _projection(attributes: Sequence[str]) -> dict[str, Any]:
    """ProjectionExpression with every name aliased (`value`, `at`... are reserved)."""
    names = {f"#p{i}": name for i, name in enumerate(attributes)}
    return {
        "ProjectionExpression": ", ".join(names),
        "ExpressionAttributeNames": names,
    }
