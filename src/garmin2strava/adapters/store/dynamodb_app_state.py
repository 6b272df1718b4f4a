"""One application-state item of the store's DynamoDB table, read on the webhook
Lambda's light path: botocore only (boto3 and the store's codecs are not imported),
one consistent GetItem of `APP`/`STATE#{key}`, the `value` map's scalars returned as
plain values. The webhook's role may read only items whose PK is `APP`
(terraform/iam.tf)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from garmin2strava.adapters.store import codec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["dynamodb_client", "read_app_state"]


def dynamodb_client() -> DynamoDBClient:
    """A client from the standard AWS environment, with short timeouts and one retry:
    a slow read must not hold up Strava's 2 seconds (the caller keeps its last value)."""
    import botocore.session
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 2})
    client = botocore.session.get_session().create_client("dynamodb", config=config)
    return cast("DynamoDBClient", client)


def read_app_state(client: DynamoDBClient, table_name: str, key: str) -> dict[str, Any] | None:
    """The state's scalar fields (numbers, strings, booleans, nulls), or None."""
    answer = client.get_item(
        TableName=table_name,
        Key={"PK": {"S": codec.APP_STATE_PK}, "SK": {"S": codec.app_state_sk(key)}},
        ConsistentRead=True,
        ProjectionExpression="#v",
        ExpressionAttributeNames={"#v": "value"},
    )
    item = answer.get("Item")
    if item is None:
        return None
    fields = item.get("value", {}).get("M", {})
    return {name: _scalar(typed) for name, typed in fields.items()}


def _scalar(typed: Any) -> Any:
    if "N" in typed:
        number = Decimal(typed["N"])
        return int(number) if number == number.to_integral_value() else float(number)
    if "S" in typed:
        return typed["S"]
    if "BOOL" in typed:
        return bool(typed["BOOL"])
    return None  # NULL, or a type this state does not use
