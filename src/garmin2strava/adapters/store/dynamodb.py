"""ports.Store on one DynamoDB table: the items of docs/architecture.md, "Data model",
no Scan. DynamoDBStore keeps the accounts, the audit and the application state; each
other port is a mixin of its own module (dynamodb_ledger, dynamodb_leases,
dynamodb_workouts, dynamodb_streams, tokens), all reaching the table through
dynamodb_access. The indexes, TTL, conditional writes and errors: docs/architecture.md,
"The two stores".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key, projection, serialize
from garmin2strava.adapters.store.dynamodb_leases import LeaseItems
from garmin2strava.adapters.store.dynamodb_ledger import LedgerItems
from garmin2strava.adapters.store.dynamodb_secrets import SecretItems
from garmin2strava.adapters.store.dynamodb_streams import STREAM_PREFIXES, StreamItems
from garmin2strava.adapters.store.dynamodb_table import create_table
from garmin2strava.adapters.store.dynamodb_workouts import MAX_WORKOUTS, WorkoutItems
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import Account, AuditEvent
from garmin2strava.ports import StoreView, TokenCipher

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["MAX_WORKOUTS", "DynamoDBStore", "create_table"]


class DynamoDBStore(TokenItems, LedgerItems, LeaseItems, WorkoutItems, StreamItems):
    """ports.Store on one table; `client=None` builds a default boto3 client (which
    honours AWS_ENDPOINT_URL_DYNAMODB)."""

    def __init__(
        self,
        table_name: str,
        cipher: TokenCipher,
        *,
        client: DynamoDBClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._table_name = table_name
        self._clock = clock  # what has expired (audit events' TTL) is decided by it
        self._table = TableAccess(
            client if client is not None else boto3.client("dynamodb"), table_name
        )
        self._secrets = SecretItems(self._table, cipher)
        self._last_user_ids: tuple[str, ...] = ()  # the accounts read_view read last

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
        # One transaction: list_accounts never sees a registry entry without its account,
        # nor read_view an account missing from the index.
        self._table.transact_write(
            [
                {"Put": {"TableName": self._table_name, "Item": serialize(account_item)}},
                {"Put": {"TableName": self._table_name, "Item": serialize(registry_item)}},
                self._index_update("ADD", [account.user_id]),
            ]
        )

    def _index_update(self, verb: str, user_ids: Sequence[str]) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table_name,
                "Key": key(codec.ACCOUNTS_PK, codec.ACCOUNTS_INDEX_SK),
                "UpdateExpression": f"{verb} userIds :ids",
                "ExpressionAttributeValues": {":ids": {"SS": list(user_ids)}},
            }
        }

    def _registry_user_pks(self) -> list[str]:
        registry = self._table.query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :user)",
            ExpressionAttributeValues={
                ":pk": {"S": codec.ACCOUNTS_PK},
                ":user": {"S": codec.user_pk("")},
            },
            ProjectionExpression="SK",
        )
        return [str(item["SK"]) for item in registry]

    def list_accounts(self) -> list[Account]:
        keys = [(pk, codec.ACCOUNT_SK) for pk in self._registry_user_pks()]
        accounts = [codec.account_from_item(item) for item in self._table.batch_get(keys)]
        return sorted(accounts, key=lambda a: codec.user_pk(a.user_id))

    # -- what an invocation reads first (ports.ViewReads) ------------------------------------
    def read_view(self, app_keys: Sequence[str]) -> StoreView:
        """One BatchGetItem when the index names the accounts this store read last time
        (a warm Lambda): the index, the app-state items, and per account its item,
        Garmin tokens and ledger mark; those two answer the cycle's next read of them.
        A changed set of accounts costs one BatchGetItem more; a store from before the
        index (no `complete` index) one Query of the registry, once."""
        index_key = (codec.ACCOUNTS_PK, codec.ACCOUNTS_INDEX_SK)
        app = [(codec.APP_STATE_PK, codec.app_state_sk(k)) for k in app_keys]
        found = self._read_keys([index_key, *app, *_account_keys(self._last_user_ids)])
        index = found.get(index_key)
        if index is not None and index.get("complete"):
            user_ids = sorted(str(u) for u in index.get("userIds") or ())
        else:
            user_ids = self._complete_index()
        missing = [u for u in user_ids if u not in self._last_user_ids]
        if missing:
            found |= self._read_keys(_account_keys(missing))
        self._last_user_ids = tuple(user_ids)
        self._table.prime(
            {
                k: found.get(k)
                for u in user_ids
                for k in _account_keys([u])
                if k[1] != codec.ACCOUNT_SK
            }
        )
        accounts = (found.get((codec.user_pk(u), codec.ACCOUNT_SK)) for u in user_ids)
        states = (found.get(k) for k in app)
        return StoreView(
            accounts=tuple(
                sorted(
                    (codec.account_from_item(item) for item in accounts if item is not None),
                    key=lambda a: codec.user_pk(a.user_id),
                )
            ),
            app_state={k: _state_value(v) for k, v in zip(app_keys, states, strict=True)},
        )

    def _read_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        return {(str(i["PK"]), str(i["SK"])): i for i in self._table.batch_get(keys)}

    def _complete_index(self) -> list[str]:
        """The index built from the registry (a store from before it): the ids added
        with `complete`, which put_account's ADD alone never sets."""
        user_ids = sorted(codec.user_id_of_pk(pk) for pk in self._registry_user_pks())
        values: dict[str, Any] = {":true": {"BOOL": True}}
        if user_ids:
            values[":ids"] = {"SS": user_ids}
        self._table.call(
            "update_item",
            Key=key(codec.ACCOUNTS_PK, codec.ACCOUNTS_INDEX_SK),
            UpdateExpression=("ADD userIds :ids " if user_ids else "") + "SET complete = :true",
            ExpressionAttributeValues=values,
        )
        return user_ids

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
        # The ledger stays, and its mark with it: the mark's version never goes back.
        self._table.batch_delete(
            [(pk, codec.ACCOUNT_SK), (pk, codec.LEASE_SK), (codec.ACCOUNTS_PK, pk)]
        )
        self._table.call(
            "update_item",
            Key=key(codec.ACCOUNTS_PK, codec.ACCOUNTS_INDEX_SK),
            UpdateExpression="DELETE userIds :ids",
            ExpressionAttributeValues={":ids": {"SS": [user_id]}},
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

    def known_athletes(self) -> frozenset[int]:
        # The links have no key to Query them by (a Scan is no role's right): the
        # accounts' athlete ids instead, one Query of the registry and one BatchGet.
        # The container's webhook, the only caller, runs on SQLite; the Lambda webhook
        # reads no ATHLETE item (terraform/iam.tf).
        keys = [(pk, codec.ACCOUNT_SK) for pk in self._registry_user_pks()]
        items = self._table.batch_get(keys, ["stravaAthleteId"])
        return frozenset(
            int(item["stravaAthleteId"])
            for item in items
            if item.get("stravaAthleteId") is not None
        )

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
                ":now": {"N": str(math.floor(self._clock().timestamp()))},
            },
            ScanIndexForward=False,
        )
        return [codec.audit_from_item(item) for item in items]

    # -- deletion of an athlete's Strava data ----------------------------------------------
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


def _account_keys(user_ids: Sequence[str]) -> list[tuple[str, str]]:
    """What read_view reads per account: its item, Garmin tokens and ledger mark."""
    return [
        (codec.user_pk(u), sk)
        for u in user_ids
        for sk in (codec.ACCOUNT_SK, codec.GARMIN_TOKEN_SK, codec.LEDGER_MARK_SK)
    ]


def _state_value(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """An app-state item's value, as get_app_state returns it."""
    if item is None:
        return None
    value = item.get("value")
    return dict(value) if isinstance(value, dict) else {}
