"""The mirror's intake: Strava's webhook requests, answered inside its 2-second budget.

`WebhookReceiver` checks the path secret, validates the event, checks its subscription
and athlete, dedupes and enqueues it (the queue does both in one write), and answers.
It imports nothing heavy and never calls Strava. It reads the store only on a cache
miss, at most once a second each: an event naming another subscription id than the
cached one re-reads the stored id (`mirror_subscription.SubscriptionSource`, else the
first events after `webhook subscribe` would be refused), and an athlete not in the
cached set re-reads the known athletes (`mirror_athletes.KnownAthletes`); an unknown
athlete's event is then dropped here, writing nothing but a counter. Every
well-formed event gets the same answer, whether it names our subscription and a known
athlete or not, so the answer tells a stranger nothing; the difference is logged and
counted. The queued events are the worker's (`mirror_worker.process_events`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from garmin2strava.domain.webhook import (
    BadEvent,
    check_handshake,
    derive_path_secret,
    parse_event,
    path_secret_matches,
)
from garmin2strava.ports import EventSink
from garmin2strava.services.mirror_athletes import KnownAthletes
from garmin2strava.services.mirror_subscription import SubscriptionSource
from garmin2strava.services.observability import (
    LogThrottle,
    MirrorStats,
    event_log_fields,
    ms_since,
)

__all__ = ["NOT_READY", "RECEIVED", "WebhookAnswer", "WebhookReceiver"]

# The mirror's log lines keep the logger name they had before the module was split:
# the JSON lines' "logger" field is what operators filter on.
log = logging.getLogger("garmin2strava.services.mirror")


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What the HTTP entrypoint sends back; nothing in `body` comes from a secret."""

    status: int
    body: Mapping[str, Any]


# The one answer to every well-formed event: queued, duplicate, foreign subscription
# and unknown athlete alike (dropped here or, without `athletes`, by the worker).
RECEIVED = WebhookAnswer(200, {"status": "received"})
# No subscription id known at all: refuse every event alike; Strava retries later.
NOT_READY = WebhookAnswer(503, {"error": "not accepting events yet"})


class WebhookReceiver:
    """The two webhook requests on the secret path: the subscription handshake and
    event delivery. `path_secret` defaults to the one derived from `verify_token`;
    with neither, no path is ours. `subscription_id` (a fixed id) or `subscriptions`
    (a SubscriptionSource) tell our subscription; with neither, every event is refused.
    `athletes` (KnownAthletes): events of other athletes are dropped here; without it
    (the Lambda webhook, whose role reads no ATHLETE item) the worker drops them."""

    def __init__(
        self,
        queue: EventSink,
        *,
        verify_token: str | None,
        stats: MirrorStats,
        clock: Callable[[], datetime],
        subscription_id: int | None = None,
        subscriptions: SubscriptionSource | None = None,
        path_secret: str | None = None,
        athletes: KnownAthletes | None = None,
    ) -> None:
        self._queue = queue
        self._verify_token = verify_token
        if path_secret is None and verify_token:
            path_secret = derive_path_secret(verify_token)
        self._path_secret = path_secret
        self._subscriptions = subscriptions or SubscriptionSource(fixed=subscription_id)
        self._athletes = athletes
        self._stats = stats
        self._clock = clock
        self._throttle = LogThrottle()

    @property
    def subscriptions(self) -> SubscriptionSource:
        return self._subscriptions

    @property
    def has_path(self) -> bool:
        """A path secret is known: Strava can reach this receiver at all."""
        return self._path_secret is not None

    def accepts_path(self, secret: str) -> bool:
        """Whether `secret` (the path segment after /webhooks/strava/) is ours; constant
        time. Every other path gets the server's ordinary 404."""
        ok = path_secret_matches(secret, self._path_secret)
        if not ok:
            self._stats.add("requests_wrong_path")
        return ok

    def handshake(self, params: Mapping[str, str]) -> WebhookAnswer:
        challenge = check_handshake(params, self._verify_token)
        if challenge is None:
            log.warning("webhook.handshake_refused", extra={"hubMode": params.get("hub.mode")})
            return WebhookAnswer(403, {"error": "forbidden"})
        log.info("webhook.handshake_ok")
        return WebhookAnswer(200, {"hub.challenge": challenge})

    def warm(self) -> None:
        """Run the request path once without queueing, before the first real event.

        Called from the HTTP app's startup in the thread pool: the pool's first use
        imports anyio's backend and starts a thread (about 140 ms on this machine,
        measured), which would otherwise land on the first POST and on every event
        queued behind it."""
        sample = {
            "aspect_type": "create",
            "event_time": 1,
            "object_id": 1,
            "object_type": "activity",
            "owner_id": 1,
            "subscription_id": 1,
            "updates": {},
        }
        event = parse_event(json.dumps(sample).encode(), now=self._clock())
        event_log_fields(event)
        self._subscriptions.current()

    def receive(self, body: bytes) -> WebhookAnswer:
        started = time.perf_counter()
        try:
            event = parse_event(body, now=self._clock())
        except BadEvent as exc:
            self._stats.add("events_rejected_bad")
            log.warning("webhook.event_rejected", extra={"reason": exc.reason})
            return WebhookAnswer(400, {"error": exc.reason})
        ours = self._subscriptions.current()
        if ours != event.subscription_id:
            ours = self._subscriptions.reread()  # made or replaced since the cache's read?
        if ours is None:
            self._stats.add("events_rejected_unconfigured")
            self._log_throttled(
                "webhook.subscription_unknown",
                {"hint": "run `garmin2strava webhook subscribe` (or `webhook list`)"},
            )
            return NOT_READY
        if event.subscription_id != ours:
            self._stats.add("events_rejected_foreign")
            self._log_throttled(
                "webhook.foreign_subscription", {"subscriptionId": event.subscription_id}
            )
            return RECEIVED
        if self._athletes is not None and not self._athletes.knows(event.owner_id):
            self._stats.add("events_rejected_unknown_athlete")
            self._log_throttled("webhook.unknown_athlete", {"athleteId": event.owner_id})
            return RECEIVED
        new = self._queue.enqueue(event, now=self._clock())
        self._stats.add("events_received" if new else "events_duplicate")
        log.info(
            "webhook.event_queued" if new else "webhook.event_duplicate",
            extra=event_log_fields(event) | {"durationMs": ms_since(started)},
        )
        return RECEIVED

    def _log_throttled(self, name: str, extra: dict[str, Any]) -> None:
        suppressed = self._throttle.due(name)
        if suppressed is not None:
            log.warning(name, extra=extra | {"suppressedSinceLast": suppressed})
