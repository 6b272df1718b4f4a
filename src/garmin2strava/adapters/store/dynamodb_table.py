"""The DynamoDB table of docs/architecture.md, "Data model": `create_table` builds it with the
indexes and TTL the store relies on (`garmin2strava store init`, the tests).

- `LSI1`: PK + `LSI1SK` (workouts by start time, ledger newest first), projection ALL.
- `GSI1`: `GSI1PK` + `GSI1SK`, sparse (unsettled ledger entries only), projection ALL.
- TTL on `expiresAt` (epoch seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from garmin2strava.adapters.aws import error_code

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["GSI1", "LSI1", "TTL_ATTRIBUTE", "create_table"]

LSI1 = "LSI1"
GSI1 = "GSI1"
TTL_ATTRIBUTE = "expiresAt"


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the table with its indexes and TTL (`garmin2strava store init`, tests).

    Idempotent: an existing table is left as it is, and TTL is (re)enabled.
    """
    try:
        client.create_table(
            TableName=table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("PK", "SK", "LSI1SK", "GSI1PK", "GSI1SK")
            ],
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            LocalSecondaryIndexes=[
                {
                    "IndexName": LSI1,
                    "KeySchema": [
                        {"AttributeName": "PK", "KeyType": "HASH"},
                        {"AttributeName": "LSI1SK", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": GSI1,
                    "KeySchema": [
                        {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                        {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    try:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        # Asking again for the TTL already set is refused with a ValidationException.
        if error_code(exc) != "ValidationException":
            raise
