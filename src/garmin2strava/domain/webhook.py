"""Strava webhook events: parsing, validation, the dedupe key, the handshake check,
and the secret callback path.

Pure: no I/O. The entrypoint turns `BadEvent` into 400 with a short reason. Whether an
event names our subscription is decided by the receiver (services.mirror_intake), which
answers foreign and valid events alike: the answer is no oracle for our id.

Strava does not sign events, so the callback URL carries a secret:
`/webhooks/strava/{secret}`. The secret is `G2S_WEBHOOK_SECRET` when set, else derived
from STRAVA_VERIFY_TOKEN with HMAC-SHA256 (`derive_path_secret`), so the container, the
CLI and the Lambda agree on it without one more setting or parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ASPECT_TYPES",
    "MAX_FUTURE_SECONDS",
    "MIN_SECRET_LENGTH",
    "OBJECT_TYPES",
    "WEBHOOK_PATH_PREFIX",
    "BadEvent",
    "DeadEvent",
    "ForeignSubscription",
    "QueuedEvent",
    "WebhookError",
    "WebhookEvent",
    "callback_path",
    "check_handshake",
    "derive_path_secret",
    "is_valid_path_secret",
    "parse_event",
    "path_secret_matches",
    "redact_callback_url",
]

OBJECT_TYPES = frozenset({"activity", "athlete"})
ASPECT_TYPES = frozenset({"create", "update", "delete"})
_MAX_UPDATES = 16  # Strava sends at most title/type/private/authorized
_MAX_VALUE_LEN = 512
_MAX_ID = 2**63 - 1  # what SQLite and DynamoDB numbers hold without loss
# The last second `datetime` can hold (9999-12-31T23:59:59Z): an event_time past it
# would crash every later use of the event.
_MAX_EVENT_TIME = 253_402_300_799
# Strava stamps an event when the change happens and delivers it at once; a few minutes
# allow for clock skew. A later stamp would make a forged update win over every real one.
MAX_FUTURE_SECONDS = 300
WEBHOOK_PATH_PREFIX = "/webhooks/strava/"
MIN_SECRET_LENGTH = 20  # a path secret (or the verify token it derives from) at least this long
_PATH_SECRET_CONTEXT = b"garmin2strava webhook callback path v1"
_PATH_SECRET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


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
        """Read back what `to_json` wrote (trusted: it passed `parse_event` once). Rows
        queued before event times were bounded still read (and fail in the worker)."""
        return _event_from_mapping(json.loads(text), subscription_id=None, max_time=_MAX_ID)


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


def parse_event(
    body: bytes, *, subscription_id: int | None = None, now: datetime | None = None
) -> WebhookEvent:
    """Validate one POSTed event. With `subscription_id`, another subscription's event
    raises ForeignSubscription; with `now`, an event dated more than MAX_FUTURE_SECONDS
    after it is a BadEvent."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: nested deeper than the parser's limit (2,000 "[" fit in 4 KiB).
        raise BadEvent("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadEvent("body is not a JSON object")
    event = _event_from_mapping(data, subscription_id=subscription_id)
    if now is not None and event.event_time > now.timestamp() + MAX_FUTURE_SECONDS:
        raise BadEvent("event_time is in the future")
    return event


def derive_path_secret(verify_token: str) -> str:
    """The callback path's secret derived from the verify token: 32 URL-safe characters
    (192 bits) that tell nothing about the token."""
    digest = hmac.new(verify_token.encode(), _PATH_SECRET_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:32]


def is_valid_path_secret(secret: str) -> bool:
    """Long enough and made of URL-safe characters only (it is one path segment)."""
    return len(secret) >= MIN_SECRET_LENGTH and set(secret) <= _PATH_SECRET_CHARS


def path_secret_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; no secret configured matches nothing."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def callback_path(secret: str) -> str:
    return WEBHOOK_PATH_PREFIX + secret


def redact_callback_url(url: str) -> str:
    """The URL with whatever follows the webhook path prefix hidden, for printing."""
    head, found, _secret = url.partition(WEBHOOK_PATH_PREFIX)
    return f"{head}{WEBHOOK_PATH_PREFIX}<secret>" if found else url


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


def _event_from_mapping(
    data: Mapping[str, Any], *, subscription_id: int | None, max_time: int = _MAX_EVENT_TIME
) -> WebhookEvent:
    object_type = _known(data, "object_type", OBJECT_TYPES)
    aspect_type = _known(data, "aspect_type", ASPECT_TYPES)
    event = WebhookEvent(
        object_type=object_type,
        object_id=_positive_int(data, "object_id"),
        aspect_type=aspect_type,
        owner_id=_positive_int(data, "owner_id"),
        subscription_id=_subscription_id(data.get("subscription_id")),
        event_time=_positive_int(data, "event_time", maximum=max_time),
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


def _positive_int(data: Mapping[str, Any], name: str, *, maximum: int = _MAX_ID) -> int:
    value = data.get(name)
    # bool is an int subclass; `true` is not an id.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadEvent(f"{name} must be an integer")
    if not 0 < value <= maximum:
        raise BadEvent(f"{name} out of range")
    return value


def _subscription_id(value: Any) -> int:
    # Strava's 2017 events carried the id as a string ("subscription_id": "1").
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:  # noqa: PLR2004 - digits of 2**63
        value = int(value)
    return _positive_int({"subscription_id": value}, "subscription_id")


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
