"""ports.Store on one DynamoDB table: the items of docs/architecture.md, "Data model", no Scan.

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

DynamoDBStore keeps the accounts, audit and application state itself and hands each
other concern to one collaborator: TableAccess (dynamodb_access.py: calls, errors, paging,
batches; attribute values in dynamodb_items.py), SecretItems (dynamodb_secrets.py:
token items), UploadLedger (dynamodb_ledger.py), SyncLeases (dynamodb_leases.py) and
WorkoutMirror (dynamodb_workouts.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key, projection
from garmin2strava.adapters.store.dynamodb_leases import SyncLeases
from garmin2strava.adapters.store.dynamodb_ledger import UploadLedger
from garmin2strava.adapters.store.dynamodb_secrets import SecretItems
from garmin2strava.adapters.store.dynamodb_streams import STREAM_PREFIXES, StreamItems
from garmin2strava.adapters.store.dynamodb_table import create_table
from garmin2strava.adapters.store.dynamodb_workouts import WorkoutMirror
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import Account, AuditEvent, LedgerEntry, Workout
from garmin2strava.domain.streams import ActivityStreams
from garmin2strava.ports import TokenCipher

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["MAX_WORKOUTS", "DynamoDBStore", "create_table"]

MAX_WORKOUTS = 3000  # the guardrail on workouts one operation may read


class DynamoDBStore(TokenItems):
    """ports.Store on one table; `client=None` builds a default boto3 client (which
    honours AWS_ENDPOINT_URL_DYNAMODB)."""

    def __init__(
        self, table_name: str, cipher: TokenCipher, *, client: DynamoDBClient | None = None
    ) -> None:
        self._table_name = table_name
        self._table = TableAccess(
            client if client is not None else boto3.client("dynamodb"), table_name
        )
        self._secrets = SecretItems(self._table, cipher)
        self._ledger = UploadLedger(self._table)
        self._leases = SyncLeases(self._table)
        self._workouts = WorkoutMirror(self._table)
        self._streams = StreamItems(self._table)

    def __repr__(self) -> str:
        return f"DynamoDBStore({self._table_name!r})"

    # -- accounts ---------------------------------------------------------------------
    def get_account(self, user_id: str) -> Account | None:
        item = self._table.get(codec.user_pk(user_id), codec.ACCOUNT_SK)
        return None if item is None else codec.account_from_item(item)

    def put_account(self, account: Account) -> None:
        pk = codec.user_pk(account.user_id)
        account_item = {"PK": pk, "SK": codec.ACCOUNT_SK, **codec.account_to_item(account)}
        registry_item = {"PK": codec.ACCOUNTS_PK, "SK": pk, "userId": account.user_id}
        # One transaction: list_accounts never sees a registry entry without its account.
        self._table.transact_put([account_item, registry_item])

    def list_accounts(self) -> list[Account]:
        registry = self._table.query(
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": codec.ACCOUNTS_PK}},
            ProjectionExpression="SK",
        )
        keys = [(str(item["SK"]), codec.ACCOUNT_SK) for item in registry]
        accounts = [codec.account_from_item(item) for item in self._table.batch_get(keys)]
        return sorted(accounts, key=lambda a: codec.user_pk(a.user_id))

    def delete_account(self, user_id: str) -> None:
        pk = codec.user_pk(user_id)
        item = self._table.get(pk, codec.ACCOUNT_SK, ["stravaAthleteId"])
        athlete_id = None if item is None else item.get("stravaAthleteId")
        if athlete_id is not None:
            # Only this account's link: the athlete may have been linked to another since.
            self._table.call_if(
                "delete_item",
                Key=key(codec.athlete_pk(int(athlete_id)), codec.ATHLETE_USER_SK),
                ConditionExpression="userId = :user",
                ExpressionAttributeValues={":user": {"S": user_id}},
            )
        self._secrets.delete(pk, codec.GARMIN_TOKEN_SK)
        self._table.batch_delete(
            [(pk, codec.ACCOUNT_SK), (pk, codec.LEASE_SK), (codec.ACCOUNTS_PK, pk)]
        )

    def link_athlete(self, athlete_id: int, user_id: str) -> None:
        item = {
            "PK": codec.athlete_pk(athlete_id),
            "SK": codec.ATHLETE_USER_SK,
            "athleteId": athlete_id,
            "userId": user_id,
        }
        self._table.put(item)

    def user_for_athlete(self, athlete_id: int) -> str | None:
        item = self._table.get(codec.athlete_pk(athlete_id), codec.ATHLETE_USER_SK, ["userId"])
        return None if item is None else str(item["userId"])

    # -- tokens (the items themselves: TokenItems) ------------------------------------------
    def _read_secret(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        return self._secrets.read(pk, sk)

    def _replace_secret(
        self, pk: str, sk: str, plaintext: bytes, expected_version: int | None
    ) -> int | None:
        return self._secrets.replace(pk, sk, plaintext, expected_version)

    def delete_strava_tokens(self, user_id: str) -> None:
        """Forget the tokens, leaving a tombstone that keeps the version counter."""
        self._secrets.delete(codec.user_pk(user_id), codec.STRAVA_TOKEN_SK)

    # -- upload ledger --------------------------------------------------------------------
    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]:
        return self._ledger.get_uploads(user_id, garmin_ids)

    def put_upload(self, entry: LedgerEntry) -> None:
        """Raises StoreConflict when an intent (pending) would overwrite a settled entry."""
        self._ledger.put_upload(entry)

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        return self._ledger.list_uploads(user_id, limit=limit)

    def list_unsettled_uploads(self, user_id: str) -> list[LedgerEntry]:
        return self._ledger.list_unsettled_uploads(user_id)

    # -- sync lease -----------------------------------------------------------------------
    def acquire_lease(self, user_id: str, owner: str, *, now: datetime, ttl_seconds: int) -> bool:
        return self._leases.acquire_lease(user_id, owner, now=now, ttl_seconds=ttl_seconds)

    def release_lease(self, user_id: str, owner: str) -> None:
        self._leases.release_lease(user_id, owner)

    # -- audit ----------------------------------------------------------------------------
    def add_audit(self, event: AuditEvent, *, retention_days: int = 7) -> None:
        item = {
            "PK": codec.user_pk(event.user_id),
            "SK": codec.audit_sk(event.at, event.event_id),
            **codec.audit_to_item(event),
            # The TTL attribute: DynamoDB deletes the event some time after this.
            "expiresAt": math.floor((event.at + timedelta(days=retention_days)).timestamp()),
        }
        self._table.put(item)

    def list_audit(
        self, user_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[AuditEvent]:
        """Newest first, from `since` on (an SK range); expired events that TTL has not
        deleted yet are filtered out."""
        if limit <= 0:
            return []
        lower = codec.AUDIT_PREFIX + ("" if since is None else codec.format_time(since))
        items = self._table.query(
            limit=limit,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :prefix AND :end",
            FilterExpression="attribute_not_exists(expiresAt) OR expiresAt > :now",
            # The event without its keys and TTL (names aliased: some are reserved words).
            **projection(["userId", "at", "kind", "eventId", "detail"]),
            ExpressionAttributeValues={
                ":pk": {"S": codec.user_pk(user_id)},
                ":prefix": {"S": lower},
                ":end": {"S": "AUDIT$"},  # '$' sorts right after '#'
                ":now": {"N": str(int(time.time()))},
            },
            ScanIndexForward=False,
        )
        return [codec.audit_from_item(item) for item in items]

    # -- mirror (the cap is read here, per call: MAX_WORKOUTS is this module's) -------------
    def upsert_workout(self, workout: Workout) -> bool:
        return self._workouts.upsert_workout(workout)

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None:
        return self._workouts.get_workout(user_id, activity_id)

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = MAX_WORKOUTS
    ) -> list[Workout]:
        """Newest start first, at most `limit`, reading at most MAX_WORKOUTS items."""
        return self._workouts.list_workouts(
            user_id, include_deleted=include_deleted, limit=limit, max_read=MAX_WORKOUTS
        )

    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]:
        """Live (not deleted) workouts with start <= startDate <= end, oldest first,
        reading at most MAX_WORKOUTS items."""
        return self._workouts.workouts_starting_between(user_id, start, end, max_read=MAX_WORKOUTS)

    def iter_workouts(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        include_deleted: bool = False,
        page_size: int = 500,
    ) -> Iterator[Workout]:
        """Oldest start first, page by page: no MAX_WORKOUTS cap, memory stays flat."""
        return self._workouts.iter_workouts(
            user_id, since=since, include_deleted=include_deleted, page_size=page_size
        )

    # -- streams (dynamodb_streams.py) ------------------------------------------------------
    def put_streams(self, streams: ActivityStreams) -> None:
        self._streams.put_streams(streams)

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        return self._streams.get_streams(user_id, activity_id)

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        self._streams.mark_streams_pending(user_id, activity_id)

    def list_pending_streams(self, user_id: str, *, limit: int = 100) -> list[int]:
        return self._streams.list_pending_streams(user_id, limit=limit)

    def forget_strava_data(self, user_id: str) -> int:
        """Query the account's workout and audit keys, then delete them in batches (not
        one transaction: a retry after a partial failure deletes the rest)."""
        pk = codec.user_pk(user_id)
        keys: list[tuple[str, str]] = []
        # WORKOUT# covers the split raw activities' parts too.
        for prefix in (codec.WORKOUT_PREFIX, codec.AUDIT_PREFIX, *STREAM_PREFIXES):
            items = self._table.query(
                KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
                ExpressionAttributeValues={":pk": {"S": pk}, ":prefix": {"S": prefix}},
                ProjectionExpression="PK, SK",
            )
            keys.extend((str(item["PK"]), str(item["SK"])) for item in items)
        return self._table.batch_delete(keys)

    # -- application-wide state -------------------------------------------------------------
    def get_app_state(self, key: str) -> dict[str, Any] | None:
        item = self._table.get(codec.APP_STATE_PK, codec.app_state_sk(key), ["value"])
        if item is None:
            return None
        value = item.get("value")
        return dict(value) if isinstance(value, dict) else {}

    def put_app_state(self, key: str, value: dict[str, Any]) -> None:
        item = {"PK": codec.APP_STATE_PK, "SK": codec.app_state_sk(key), "value": value}
        self._table.put(item)
