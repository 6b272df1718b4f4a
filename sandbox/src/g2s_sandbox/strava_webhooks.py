"""The Strava emulator's push subscriptions and webhook event delivery.

Stdlib only. As Strava does (developers.strava.com/docs/webhooks): one subscription per
application; creating it calls the callback with the `hub.*` handshake first and
succeeds only on a 200 with the echoed challenge within 2 s; every change then POSTs
an event to the callback, three attempts in all when the answer is not a 200 within
2 s. Delivery runs on its own thread, so no API request of the emulator waits for it;
`delivery_delay_s` holds each event back that long after the change (real Strava
delivers within seconds, not at once).
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

__all__ = ["PushSubscription", "WebhookHub"]

_MAX_CALLBACK_URL = 255


def _error(message: str, resource: str, fld: str, code: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"resource": resource, "field": fld, "code": code}]}


@dataclass(frozen=True, slots=True)
class PushSubscription:
    subscription_id: int
    application_id: int
    callback_url: str
    created_at: float

    def as_json(self) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "id": self.subscription_id,
            "resource_state": 2,
            "application_id": self.application_id,
            "callback_url": self.callback_url,
            "created_at": created,
            "updated_at": created,
        }


class WebhookHub:
    """Subscriptions of one application and the delivery of its events.

    Counters: `webhook_deliveries` (events handed to the callback with a 200),
    `webhook_attempts` (POSTs made), `webhook_failures` (events given up after the
    last attempt). `delivered` keeps the payloads the callback accepted."""

    def __init__(
        self,
        *,
        client_id: int,
        client_secret: str,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 2.0,
        max_attempts: int = 3,
        retry_delay_s: float = 0.05,
        delivery_delay_s: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s  # Strava waits longer; tests need not
        self.delivery_delay_s = delivery_delay_s
        self.subscription: PushSubscription | None = None
        self.webhook_deliveries = 0
        self.webhook_attempts = 0
        self.webhook_failures = 0
        self.delivered: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._next_id = 120_000
        # (due on the monotonic clock, callback URL, event); None: stop
        self._outbox: queue.Queue[tuple[float, str, dict[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._deliver_forever, name="strava-sandbox-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._outbox.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every published event was delivered or given up."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    # -- the API: /api/v3/push_subscriptions -----------------------------------------
    def handle(
        self, method: str, subscription_id: int | None, form: Mapping[str, str]
    ) -> tuple[int, dict[str, Any] | list[Any]]:
        if form.get("client_id") != str(self.client_id) or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return 401, _error("Authorization Error", "Application", "client_id", "invalid")
        if method == "GET" and subscription_id is None:
            with self._lock:
                current = self.subscription
            return 200, [current.as_json()] if current else []
        if method == "POST" and subscription_id is None:
            return self._create(form)
        if method == "DELETE" and subscription_id is not None:
            with self._lock:
                current = self.subscription
                if current is None or current.subscription_id != subscription_id:
                    return 404, _error("Record Not Found", "PushSubscription", "id", "invalid")
                self.subscription = None
            return 204, {}
        return 404, _error("Record Not Found", "Path", "push_subscriptions", "invalid")

    def _create(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        callback_url = form.get("callback_url", "")
        verify_token = form.get("verify_token", "")
        if not callback_url or len(callback_url) > _MAX_CALLBACK_URL:
            return 400, _error("Bad Request", "PushSubscription", "callback_url", "invalid")
        with self._lock:
            if self.subscription is not None:
                return 400, _error("Bad Request", "PushSubscription", "", "already exists")
        # The handshake runs without the lock: the callback may take up to 2 s.
        if not self._handshake(callback_url, verify_token):
            return 400, _error("Bad Request", "Callback url", "", "not verifiable")
        with self._lock:
            if self.subscription is not None:  # another create won meanwhile
                return 400, _error("Bad Request", "PushSubscription", "", "already exists")
            self._next_id += 1
            self.subscription = PushSubscription(
                self._next_id, self.client_id, callback_url, self.clock()
            )
            return 201, {"id": self._next_id}

    def _handshake(self, callback_url: str, verify_token: str) -> bool:
        challenge = secrets.token_hex(8)
        query = urlencode(
            {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
        )
        separator = "&" if "?" in callback_url else "?"
        try:
            with urllib.request.urlopen(  # noqa: S310 - the callback URL is the test's own
                callback_url + separator + query, timeout=self.timeout_s
            ) as answer:
                if answer.status != 200:  # noqa: PLR2004 - HTTP status
                    return False
                body = json.loads(answer.read(4096))
        except (OSError, ValueError):  # HTTPError, timeouts and bad JSON alike
            return False
        return isinstance(body, dict) and body.get("hub.challenge") == challenge

    # -- events ----------------------------------------------------------------------
    def publish(
        self,
        *,
        object_type: str,
        object_id: int,
        aspect_type: str,
        owner_id: int,
        updates: Mapping[str, str] | None = None,
    ) -> None:
        """Queue one event for delivery; nothing happens without a subscription."""
        with self._lock:
            current = self.subscription
            if current is None:
                return
            self._pending += 1
        event = {
            "aspect_type": aspect_type,
            "event_time": int(self.clock()),
            "object_id": object_id,
            "object_type": object_type,
            "owner_id": owner_id,
            "subscription_id": current.subscription_id,
            "updates": dict(updates or {}),
        }
        due = time.monotonic() + self.delivery_delay_s
        self._outbox.put((due, current.callback_url, event))

    def _deliver_forever(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            due, callback_url, event = item
            time.sleep(max(0.0, due - time.monotonic()))
            delivered = self._deliver(callback_url, event)
            with self._idle:
                if delivered:
                    self.webhook_deliveries += 1
                    self.delivered.append(event)
                else:
                    self.webhook_failures += 1
                self._pending -= 1
                self._idle.notify_all()

    def _deliver(self, callback_url: str, event: dict[str, Any]) -> bool:
        body = json.dumps(event).encode()
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(self.retry_delay_s)
            with self._lock:
                self.webhook_attempts += 1
            request = urllib.request.Request(  # noqa: S310 - the callback URL is the test's own
                callback_url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310 - as above
                    if answer.status == 200:  # noqa: PLR2004 - HTTP status
                        return True
            except OSError:  # an HTTP error status, a refused connection or a timeout
                continue
        return False
