"""ports.Store on one DynamoDB table: the items of docs/architecture.md, "Data model",
no Scan. DynamoDBStore keeps the accounts, the audit and the application state; each
other port is a mixin of its own module (dynamodb_ledger, dynamodb_leases,
dynamodb_workouts, dynamodb_streams, tokens), all reaching the table through
dynamodb_access. The indexes, TTL, conditional writes and errors: docs/architecture.md,
"The two stores".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3

from garmin2strava.adapters.store import codec
from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key, projection
from garmin2strava.adapters.store.dynamodb_leases import LeaseItems
from garmin2strava.adapters.store.dynamodb_ledger import LedgerItems
from garmin2strava.adapters.store.dynamodb_secrets import SecretItems
from garmin2strava.adapters.store.dynamodb_streams import STREAM_PREFIXES, StreamItems
from garmin2strava.adapters.store.dynamodb_table import create_table
from garmin2strava.adapters.store.dynamodb_workouts import MAX_WORKOUTS, WorkoutItems
from garmin2strava.adapters.store.tokens import TokenItems
from garmin2strava.domain.models import Account, AuditEvent
from garmin2strava.ports import TokenCipher

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

    def known_athletes(self) -> frozenset[int]:
        # The links have no key to Query them by (a Scan is no role's right): the
        # accounts' athlete ids instead, one Query of the registry and one BatchGet.
        # The container's webhook, the only caller, runs on SQLite; the Lambda webhook
        # reads no ATHLETE item (terraform/iam.tf).
        registry = self._table.query(
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": codec.ACCOUNTS_PK}},
            ProjectionExpression="SK",
        )
        keys = [(str(item["SK"]), codec.ACCOUNT_SK) for item in registry]
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
