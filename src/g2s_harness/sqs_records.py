"""What Lambda's SQS event source mapping hands a function for a received message.

One shape for every harness that plays the poller (the Lambda tests, the cost bench,
`make tf-check`'s smoke test): a message from boto3's ReceiveMessage (with
AttributeNames and MessageAttributeNames "All") becomes one record of the event, as
AWS documents it ("Using Lambda with Amazon SQS": an example event)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["sqs_event", "sqs_record"]


def sqs_record(
    message: Mapping[str, Any], *, queue_arn: str = "", region: str = ""
) -> dict[str, Any]:
    """The event record for one received `message`."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {str(k): v for k, v in message.get("Attributes", {}).items()},
        "messageAttributes": {
            str(name): {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def sqs_event(
    messages: Sequence[Mapping[str, Any]], *, queue_arn: str = "", region: str = ""
) -> dict[str, Any]:
    """The event for a batch of received `messages`."""
    return {"Records": [sqs_record(m, queue_arn=queue_arn, region=region) for m in messages]}
