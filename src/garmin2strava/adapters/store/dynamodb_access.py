"""Calls on the store's DynamoDB table: error translation (throttling, 5xx and network
failures raise TransientError; messages carry the operation and AWS error code, never
attribute values), conditional calls, paginated queries and batched reads, and the items
an invocation read ahead in its one BatchGetItem (`prime`): each answers the next `get`
of its key once, within PRIMED_FOR_S, unless this process wrote the key since."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from garmin2strava.adapters.aws import error_code, is_transient, transient_error
from garmin2strava.adapters.store.dynamodb_items import deserialize, key, projection, serialize
from garmin2strava.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["TableAccess"]

_BATCH_GET_MAX = 100  # BatchGetItem's limit on keys per request
_BATCH_WRITE_MAX = 25  # BatchWriteItem's limit on requests per call
_BATCH_ATTEMPTS = 6
_CONDITION_FAILED = "ConditionalCheckFailedException"
# How long an item read ahead may answer a later read: an invocation's cycle reads it
# within a second or two; a prime left unused is not served to anything later.
PRIMED_FOR_S = 30.0


class TableAccess:
    """One table through one low-level client; items go in and come out as plain dicts."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name
        # (PK, SK) -> the item read ahead (None: read, and absent); with its deadline.
        self._primed: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._primed_until = 0.0

    def prime(self, items: Mapping[tuple[str, str], dict[str, Any] | None]) -> None:
        """Replace what was read ahead: each item answers the next `get` of its key."""
        self._primed = dict(items)
        self._primed_until = time.monotonic() + PRIMED_FOR_S

    def _forget(self, kwargs: Mapping[str, Any]) -> None:
        """A write to a key ends its prime: what this process wrote is read back."""
        if not self._primed:
            return
        keyed = kwargs.get("Key") or kwargs.get("Item")
        if keyed is not None:
            self._primed.pop((str(keyed["PK"]["S"]), str(keyed["SK"]["S"])), None)

    def _take_primed(self, pk: str, sk: str) -> tuple[bool, dict[str, Any] | None]:
        if (pk, sk) not in self._primed:
            return False, None
        item = self._primed.pop((pk, sk))
        return time.monotonic() < self._primed_until, item

    def call(self, operation: str, **kwargs: Any) -> Any:
        """One client call; transient failures become TransientError."""
        self._forget(kwargs)
        try:
            return getattr(self._client, operation)(TableName=self._table, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            if is_transient(exc):
                raise transient_error(f"DynamoDB {operation}", exc) from exc
            raise

    def call_if(self, operation: str, **kwargs: Any) -> Any | None:
        """One call with a ConditionExpression; None when the condition does not hold."""
        try:
            return self.call(operation, **kwargs)
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return None
            raise

    def put(self, item: dict[str, Any]) -> None:
        self.call("put_item", Item=serialize(item))

    def put_if(self, item: dict[str, Any], condition: str, **names_values: Any) -> bool:
        """PutItem under `condition`; False when the condition does not hold."""
        answer = self.call_if(
            "put_item", Item=serialize(item), ConditionExpression=condition, **names_values
        )
        return answer is not None

    def transact_put(self, items: Sequence[dict[str, Any]]) -> None:
        """Unconditional puts in one transaction: all of them or none."""
        self.transact_write(
            [{"Put": {"TableName": self._table, "Item": serialize(item)}} for item in items]
        )

    def transact_write(self, actions: Sequence[dict[str, Any]]) -> None:
        """TransactWriteItems of `actions` (Put/Update/...), each naming this table."""
        for action in actions:
            for body in action.values():
                self._forget(body)
        try:
            self._client.transact_write_items(TransactItems=list(actions))  # type: ignore[arg-type]  # built as plain dicts
        except (BotoCoreError, ClientError) as exc:
            # A transaction of unconditional puts is cancelled only by a concurrent one.
            cancelled = isinstance(exc, ClientError) and (
                error_code(exc) == "TransactionCanceledException"
            )
            if is_transient(exc) or cancelled:
                raise transient_error("DynamoDB transact_write_items", exc) from exc
            raise

    def get(self, pk: str, sk: str, attributes: Sequence[str] = ()) -> dict[str, Any] | None:
        fresh, primed = self._take_primed(pk, sk)
        if fresh:  # the whole item (a projection's caller reads only its attributes)
            return primed
        kwargs: dict[str, Any] = {"Key": key(pk, sk), "ConsistentRead": True}
        if attributes:
            kwargs.update(projection(attributes))
        answer = self.call("get_item", **kwargs)
        item = answer.get("Item")
        return None if item is None else deserialize(item)

    def query(
        self, *, limit: int | None = None, inspect: int | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item a Query returns, page after page, stopping after `limit` items or
        once `inspect` items have been read before filtering (the read guardrail)."""
        seen = inspected = 0
        while True:
            if inspect is not None:
                kwargs["Limit"] = inspect - inspected
            page = self.call("query", **kwargs)
            inspected += int(page.get("ScannedCount", 0))
            for item in page.get("Items", []):
                yield deserialize(item)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            last = page.get("LastEvaluatedKey")
            if not last or (inspect is not None and inspected >= inspect):
                return
            kwargs["ExclusiveStartKey"] = last

    def batch_get(
        self, keys: Sequence[tuple[str, str]], attributes: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, retrying UnprocessedKeys with backoff."""
        unique = list(dict.fromkeys(keys))
        found: list[dict[str, Any]] = []
        for start in range(0, len(unique), _BATCH_GET_MAX):
            request: dict[str, Any] = {
                "Keys": [key(pk, sk) for pk, sk in unique[start : start + _BATCH_GET_MAX]],
                "ConsistentRead": True,
            }
            if attributes:
                request.update(projection(attributes))
            found.extend(self._batch_get_chunk(request))
        return found

    def batch_delete(self, keys: Sequence[tuple[str, str]]) -> int:
        """Delete the items, 25 a BatchWriteItem, retrying UnprocessedItems with backoff.
        Returns the number of keys given (deleting a missing item is no error)."""
        unique = list(dict.fromkeys(keys))
        for pk, sk in unique:
            self._primed.pop((pk, sk), None)
        for start in range(0, len(unique), _BATCH_WRITE_MAX):
            chunk = unique[start : start + _BATCH_WRITE_MAX]
            pending: dict[str, Any] = {
                self._table: [{"DeleteRequest": {"Key": key(pk, sk)}} for pk, sk in chunk]
            }
            for attempt in range(_BATCH_ATTEMPTS):
                try:
                    answer = self._client.batch_write_item(RequestItems=pending)
                except (BotoCoreError, ClientError) as exc:
                    if is_transient(exc):
                        raise transient_error("DynamoDB batch_write_item", exc) from exc
                    raise
                pending = dict(answer.get("UnprocessedItems") or {})
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                msg = "DynamoDB batch_write_item: items still unprocessed after retries"
                raise TransientError(msg)
        return len(unique)

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
            found.extend(deserialize(i) for i in answer.get("Responses", {}).get(self._table, []))
            pending = dict(answer.get("UnprocessedKeys") or {})
            if not pending:
                return found
            time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off, then retry the rest
        msg = "DynamoDB batch_get_item: keys still unprocessed after retries"
        raise TransientError(msg)
