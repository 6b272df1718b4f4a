"""Strava webhook events: parsing, validation, the dedupe key, the handshake check.

Pure: no I/O. The entrypoint turns `BadEvent` into 400 and `ForeignSubscription` into
403; Strava never learns more than a short reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ASPECT_TYPES",
    "OBJECT_TYPES",
    "BadEvent",
    "DeadEvent",
    "ForeignSubscription",
    "QueuedEvent",
    "WebhookError",
    "WebhookEvent",
    "check_handshake",
    "parse_event",
]

OBJECT_TYPES = frozenset({"activity", "athlete"})
ASPECT_TYPES = frozenset({"create", "update", "delete"})
_MAX_UPDATES = 16  # Strava sends at most title/type/private/authorized
_MAX_VALUE_LEN = 512
_MAX_ID = 2**63 - 1  # what SQLite and DynamoDB numbers hold without loss


class WebhookError(Exception):
    """An event we refuse to queue."""


class BadEvent(WebhookError):
    """Malformed JSON, a wrong type, an unknown kind. `reason` is safe to echo."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ForeignSubscription(WebhookError):
    """The event names a subscription that is not ours."""

    def __init__(self, subscription_id: int) -> None:
        self.subscription_id = subscription_id
        msg = f"subscription {subscription_id} is not ours"
        super().__init__(msg)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One push event, exactly the fields Strava sends."""

    object_type: str  # "activity" | "athlete"
    object_id: int
    aspect_type: str  # "create" | "update" | "delete"
    owner_id: int  # the athlete
    subscription_id: int
    event_time: int  # epoch seconds
    updates: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def dedupe_key(self) -> str:
        """Same for a redelivery of this event, different for any other event."""
        parts = [
            self.object_type,
            str(self.object_id),
            self.aspect_type,
            str(self.event_time),
            str(self.owner_id),
            json.dumps(dict(self.updates), sort_keys=True, separators=(",", ":")),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    @property
    def correlation_id(self) -> str:
        """Short id that follows the event from the HTTP answer to the worker's logs."""
        return self.dedupe_key[:16]

    @property
    def object_key(self) -> str:
        """Events with the same key are about the same object and are served together."""
        return f"{self.object_type}:{self.object_id}"

    @property
    def happened_at(self) -> datetime:
        return datetime.fromtimestamp(self.event_time, UTC)

    @property
    def is_deauthorization(self) -> bool:
        return (
            self.object_type == "athlete"
            and self.aspect_type == "update"
            and self.updates.get("authorized") == "false"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "object_type": self.object_type,
                "object_id": self.object_id,
                "aspect_type": self.aspect_type,
                "owner_id": self.owner_id,
                "subscription_id": self.subscription_id,
                "event_time": self.event_time,
                "updates": dict(self.updates),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> WebhookEvent:
        """Read back what `to_json` wrote (trusted: it passed `parse_event` once)."""
        return _event_from_mapping(json.loads(text), subscription_id=None)


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event in the durable queue, as a worker claimed it."""

    queue_id: int
    event: WebhookEvent
    attempts: int  # failed attempts so far
    enqueued_at: datetime
    claim_token: str = ""
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class DeadEvent:
    """An event that used up its attempts (or cannot succeed); kept until retried."""

    queue_id: int
    event: WebhookEvent
    attempts: int
    error: str
    enqueued_at: datetime
    died_at: datetime


def parse_event(body: bytes, *, subscription_id: int | None) -> WebhookEvent:
    """Validate one POSTed event. `subscription_id` None accepts any subscription
    (only until ours is known: the handshake precedes it)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: nested deeper than the parser's limit (2,000 "[" fit in 4 KiB).
        raise BadEvent("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadEvent("body is not a JSON object")
    return _event_from_mapping(data, subscription_id=subscription_id)


def check_handshake(params: Mapping[str, str], verify_token: str | None) -> str | None:
    """The challenge to echo when the subscription handshake is ours, else None."""
    if not verify_token:
        return None
    if params.get("hub.mode") != "subscribe":
        return None
    challenge = params.get("hub.challenge")
    given = params.get("hub.verify_token")
    if not challenge or given is None or len(challenge) > _MAX_VALUE_LEN:
        return None
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    return challenge


def _event_from_mapping(data: Mapping[str, Any], *, subscription_id: int | None) -> WebhookEvent:
    object_type = _known(data, "object_type", OBJECT_TYPES)
    aspect_type = _known(data, "aspect_type", ASPECT_TYPES)
    event = WebhookEvent(
        object_type=object_type,
        object_id=_positive_int(data, "object_id"),
        aspect_type=aspect_type,
        owner_id=_positive_int(data, "owner_id"),
        subscription_id=_positive_int(data, "subscription_id"),
        event_time=_positive_int(data, "event_time"),
        updates=_updates(data.get("updates")),
    )
    if subscription_id is not None and event.subscription_id != subscription_id:
        raise ForeignSubscription(event.subscription_id)
    return event


def _known(data: Mapping[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadEvent(f"{name} must be a string")
    if value not in allowed:
        raise BadEvent(f"unknown {name}")
    return value


def _positive_int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    # bool is an int subclass; `true` is not an id.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadEvent(f"{name} must be an integer")
    if not 0 < value <= _MAX_ID:
        raise BadEvent(f"{name} out of range")
    return value


def _updates(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent("updates must be an object")
    if len(value) > _MAX_UPDATES:
        raise BadEvent("too many updates")
    updates: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):  # Strava sends "true"/"false"; accept real booleans too
            text = "true" if item else "false"
        elif isinstance(item, str | int | float):
            text = str(item)
        else:
            raise BadEvent("updates values must be scalars")
        if len(key) > _MAX_VALUE_LEN or len(text) > _MAX_VALUE_LEN:
            raise BadEvent("updates value too long")
        updates[key] = text
    return updates
