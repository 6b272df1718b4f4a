"""ports.EventQueue on SQS, in its two halves (the AWS flavour of queue_sqlite.py).

`SqsEventQueue` is the webhook Lambda's enqueue side (one SendMessage per event, no
dedupe: `enqueue` always answers True); `SqsBatch` is one worker invocation's batch.
Why there is no dedupe, and what becomes a batch item failure: docs/architecture.md,
"The webhook queue on SQS". botocore, not boto3: boto3 also imports s3transfer, which
the webhook's cold start has no use for.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from garmin2strava.domain.webhook import BadEvent, DeadEvent, QueuedEvent, WebhookEvent, parse_event

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

__all__ = [
    "FIRST_SENT_ATTRIBUTE",
    "MAX_DELAY_SECONDS",
    "SqsBatch",
    "SqsEventQueue",
    "dead_letter_depth",
    "max_receive_count",
    "sqs_client",
]

log = logging.getLogger(__name__)

# The longest DelaySeconds SQS accepts. A longer wait defers again on the next delivery.
MAX_DELAY_SECONDS = 900
# The message attribute a re-sent copy carries: the first send's SentTimestamp (ms).
FIRST_SENT_ATTRIBUTE = "firstSentAt"


def sqs_client() -> SQSClient:
    """A client from the standard AWS environment (region, credentials, endpoint)."""
    import botocore.session

    return cast("SQSClient", botocore.session.get_session().create_client("sqs"))


def max_receive_count(queue_url: str, *, client: SQSClient | None = None) -> int | None:
    """The queue's redrive `maxReceiveCount`; None when it has none or is unreadable."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = client if client is not None else sqs_client()
    try:
        answer = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    except (BotoCoreError, ClientError) as exc:
        # The worker still works without it; it only cannot tell the last delivery.
        log.warning("sqs.redrive_policy_unreadable", extra={"error": type(exc).__name__})
        return None
    policy = answer.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return None
    return int(json.loads(policy)["maxReceiveCount"])


def dead_letter_depth(queue_url: str, *, client: SQSClient | None = None) -> int:
    """Messages in the dead-letter queue at `queue_url`, visible or not (one
    GetQueueAttributes; SQS's figures are approximate). Raises what botocore raises."""
    client = client if client is not None else sqs_client()
    answer = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = answer.get("Attributes", {})
    return sum(
        _int(attributes.get(name), default=0)
        for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    )


class SqsEventQueue:
    """ports.EventSink over SQS: SendMessage to one standard queue. The consuming side
    is Lambda's event source mapping, handed to the worker as an SqsBatch."""

    __slots__ = ("_client", "_queue_url")

    def __init__(self, queue_url: str, *, client: SQSClient | None = None) -> None:
        self._queue_url = queue_url
        self._client: SQSClient = client if client is not None else sqs_client()

    def __repr__(self) -> str:
        return f"SqsEventQueue(queue_url={self._queue_url!r})"

    def enqueue(self, event: WebhookEvent, *, now: datetime) -> bool:  # noqa: ARG002 (EventQueue's signature)
        """Durable once SendMessage answered. Always True: no dedupe (docs/architecture.md,
        "The webhook queue on SQS")."""
        self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=event.to_json(),
            MessageAttributes={
                "correlationId": {"DataType": "String", "StringValue": event.correlation_id},
                "objectKey": {"DataType": "String", "StringValue": event.object_key},
            },
        )
        return True


@dataclass(frozen=True, slots=True)
class _Message:
    message_id: str
    queued: QueuedEvent | None  # None: the body is not an event we wrote
    error: str = ""
    # What a re-send copies unchanged, so the copy is the same event to the worker.
    body: str = ""
    attributes: Mapping[str, Any] | None = None


class SqsBatch:
    """The consuming side of EventQueue over one Lambda SQS batch.

    `queue_id` is the record's position in the batch. `attempts` is SQS's
    ApproximateReceiveCount minus this delivery, so `process_events(max_attempts=
    maxReceiveCount)` dead-letters (audits) an event on its last delivery, and the
    redrive policy then moves it to the DLQ. Failures and dead letters end as batch
    item failures: SQS has the only copy, and only SQS may drop it.

    A release (the Strava budget is spent until `available_at`) sends the message
    again to `queue_url`, with the same body and attributes, delayed until then (at
    most MAX_DELAY_SECONDS), and completes this delivery. The copy is a new message
    with a fresh receive count, so a day-long budget outage moves nothing towards the
    DLQ. Without a client and queue URL, or when the send fails, the release ends as a
    batch item failure instead: the message is never lost.
    """

    def __init__(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        queue_url: str = "",
        client: SQSClient | None = None,
    ) -> None:
        self._messages = [_read_record(i, r) for i, r in enumerate(records)]
        self._queue_url = queue_url
        self._client = client
        self._claimed_at: datetime | None = None
        self._completed: set[int] = set()
        self.errors: dict[str, str] = {m.message_id: m.error for m in self._messages if m.error}
        self.resent = 0  # deferred messages sent again (delayed) and completed

    def __len__(self) -> int:
        return len(self._messages)

    def failed_message_ids(self) -> list[str]:
        """Every message not completed, in batch order: Lambda's batchItemFailures."""
        return [m.message_id for i, m in enumerate(self._messages) if i not in self._completed]

    def claim(
        self,
        *,
        now: datetime,
        limit: int = 50,
        visibility_seconds: float = 60.0,  # noqa: ARG002 (SQS owns the visibility timeout)
    ) -> list[list[QueuedEvent]]:
        """The whole batch once, grouped by object (oldest event first in a group)."""
        if self._claimed_at is not None:
            return []
        self._claimed_at = now
        groups: dict[str, list[QueuedEvent]] = {}
        for message in self._messages:
            if message.queued is not None:
                groups.setdefault(message.queued.event.object_key, []).append(message.queued)
        ordered = [
            sorted(group, key=lambda q: (q.event.event_time, q.queue_id))
            for group in groups.values()
        ]
        return ordered[:limit]

    def complete(self, records: Sequence[QueuedEvent], *, now: datetime) -> None:  # noqa: ARG002 (EventQueue's signature)
        self._completed.update(r.queue_id for r in records)

    def release(self, records: Sequence[QueuedEvent], *, available_at: datetime) -> None:
        # Returned as a batch item failure, each wait would spend one of the message's
        # maxReceiveCount deliveries; a new, delayed copy spends none. The delay counts
        # from the claim's `now`, so the copy never comes back before `available_at`.
        delay = _delay_seconds(self._claimed_at or datetime.now(UTC), available_at)
        for record in records:
            if self._resend(self._messages[record.queue_id], delay):
                self._completed.add(record.queue_id)
                self.resent += 1
            else:
                self._note([record], f"deferred until {available_at.isoformat()}")

    def fail(self, records: Sequence[QueuedEvent], *, retry_at: datetime, error: str) -> None:  # noqa: ARG002 (EventQueue's signature)
        self._note(records, error)

    def dead_letter(self, records: Sequence[QueuedEvent], *, now: datetime, error: str) -> None:  # noqa: ARG002 (EventQueue's signature)
        self._note(records, error)

    def list_dead(self, *, limit: int = 100) -> list[DeadEvent]:  # noqa: ARG002 (EventQueue's signature)
        return []  # the SQS dead-letter queue holds them

    def retry_dead(self, queue_id: int, *, now: datetime) -> bool:  # noqa: ARG002 (EventQueue's signature)
        return False

    def depth(self) -> int:
        if self._claimed_at is not None:
            return 0
        return sum(m.queued is not None for m in self._messages)

    def oldest_age(self, *, now: datetime) -> float | None:
        if self._claimed_at is not None:
            return None
        times = [m.queued.enqueued_at for m in self._messages if m.queued is not None]
        return (now - min(times)).total_seconds() if times else None

    def _note(self, records: Sequence[QueuedEvent], error: str) -> None:
        for record in records:
            self.errors[self._messages[record.queue_id].message_id] = error

    def _resend(self, message: _Message, delay: int) -> bool:
        """Send `message` again, delayed by `delay` seconds; False when it was not sent."""
        if self._client is None or not self._queue_url:
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        attributes = dict(message.attributes or {})
        if message.queued is not None and FIRST_SENT_ATTRIBUTE not in attributes:
            # The copy keeps the first send's time: the worker's outage backoff grows
            # with the event's age, which a fresh SentTimestamp would reset.
            first_ms = round(message.queued.enqueued_at.timestamp() * 1000)
            attributes[FIRST_SENT_ATTRIBUTE] = {"dataType": "Number", "stringValue": str(first_ms)}
        try:
            self._client.send_message(
                QueueUrl=self._queue_url,
                MessageBody=message.body,
                DelaySeconds=delay,
                MessageAttributes=_send_attributes(attributes),
            )
        except (BotoCoreError, ClientError) as exc:
            code = (
                exc.response.get("Error", {}).get("Code", "")
                if isinstance(exc, ClientError)
                else ""
            )
            log.warning(
                "worker.resend_failed",
                extra={"messageId": message.message_id, "error": type(exc).__name__, "code": code},
            )
            return False
        log.info(
            "worker.deferred_resent", extra={"messageId": message.message_id, "delaySeconds": delay}
        )
        return True


def _delay_seconds(now: datetime, available_at: datetime) -> int:
    """Whole seconds from `now` until `available_at` (rounded up), within SQS's range."""
    wait = math.ceil((available_at - now).total_seconds())
    return min(max(wait, 0), MAX_DELAY_SECONDS)


def _send_attributes(
    record_attributes: Mapping[str, Any],
) -> dict[str, MessageAttributeValueTypeDef]:
    """A Lambda record's messageAttributes (camelCase, binary as base64) in the shape
    SendMessage takes."""
    out: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in record_attributes.items():
        data_type = str(value.get("dataType", "String"))
        if value.get("stringValue") is not None:
            out[name] = {"DataType": data_type, "StringValue": str(value["stringValue"])}
        elif value.get("binaryValue") is not None:
            binary = base64.b64decode(str(value["binaryValue"]))
            out[name] = {"DataType": data_type, "BinaryValue": binary}
    return out


def _read_record(index: int, record: Mapping[str, Any]) -> _Message:
    message_id = str(record.get("messageId", f"#{index}"))
    attributes = record.get("attributes") or {}
    try:
        event = _event_from_body(str(record.get("body", "")))
    except BadEvent as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        # Not ours or damaged: it can only fail, and after its last delivery it waits
        # in the DLQ for a human instead of vanishing.
        log.error("worker.bad_message", extra={"messageId": message_id, "reason": reason})
        return _Message(message_id, None, f"unreadable message: {reason}")
    receives = _int(attributes.get("ApproximateReceiveCount"), default=1)
    sent_ms = _int(attributes.get("SentTimestamp"), default=0)
    first_sent = (record.get("messageAttributes") or {}).get(FIRST_SENT_ATTRIBUTE)
    if isinstance(first_sent, Mapping):
        sent_ms = _int(first_sent.get("stringValue"), default=sent_ms)
    queued = QueuedEvent(
        queue_id=index,
        event=event,
        attempts=max(receives - 1, 0),
        enqueued_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
        claim_token=message_id,
    )
    return _Message(
        message_id,
        queued,
        body=str(record.get("body", "")),
        attributes=record.get("messageAttributes") or {},
    )


def _event_from_body(body: str) -> WebhookEvent:
    # The body is what SqsEventQueue wrote, but anyone allowed to send to the queue
    # could have written something else: validate it as an incoming event.
    return parse_event(body.encode(), subscription_id=None)


def _int(value: object, *, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default
