"""Faults that last a while, for the soak (bench/soak.py): the emulators' own
fail_next answers the next few requests; these hold until they are lifted.

- `StravaFaults`: every API and OAuth request answered with a 5xx (an outage), or
  with 429 and headers saying the 15-minute window is spent (a rate-limit storm).
- `WebhookDisorder`: the push subscription's events dropped, delivered twice or held
  back behind the next one (out of order), each with its own probability.
- `withhold_activity` / `release_activity`: an activity missing from Garmin's list
  answers for a while (Garmin's listing lags the watch's upload), then back.

Each wraps one method of one emulator instance, so the emulators' modules are not
edited and an emulator without a fault behaves exactly as before.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from g2s_sandbox.garmin import GarminSandbox
from g2s_sandbox.strava import StravaSandbox

__all__ = ["StravaFaults", "WebhookDisorder", "release_activity", "withhold_activity"]

_OUTAGE_BODY = {"message": "Service Unavailable", "errors": []}
_RATE_BODY = {
    "message": "Rate Limit Exceeded",
    "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
}
_TOO_MANY = 429


class StravaFaults:
    """A lasting answer for every request Strava gets, push subscriptions aside
    (Strava's webhook service is separate); `answer(None)` lifts it."""

    def __init__(self, strava: StravaSandbox) -> None:
        self._strava = strava
        self._status: int | None = None
        self.answered: Counter[int] = Counter()
        self._lock = threading.Lock()
        inner = strava.handle

        def handle(
            method: str, path: str, query: dict[str, str], headers: Any, body: bytes
        ) -> tuple[int, dict[str, Any] | list[Any], dict[str, str]]:
            with self._lock:
                status = self._status
                if status is not None and "push_subscriptions" not in path:
                    self.answered[status] += 1
                else:
                    status = None
            if status is None:
                return inner(method, path, query, headers, body)
            if status == _TOO_MANY:
                return status, dict(_RATE_BODY), self._spent_window()
            return status, dict(_OUTAGE_BODY), {}

        strava.handle = handle  # type: ignore[method-assign]  # this instance only

    def answer(self, status: int | None) -> None:
        with self._lock:
            self._status = status

    def _spent_window(self) -> dict[str, str]:
        """Strava's headers with the 15-minute usage at its limit (reads and all)."""
        headers = dict(self._strava.rate_headers())
        for limit_name, usage_name in (
            ("X-RateLimit-Limit", "X-RateLimit-Usage"),
            ("X-ReadRateLimit-Limit", "X-ReadRateLimit-Usage"),
        ):
            short_limit = headers[limit_name].split(",")[0]
            daily_usage = headers[usage_name].split(",")[1]
            headers[usage_name] = f"{short_limit},{daily_usage}"
        return headers


@dataclass(frozen=True, slots=True)
class _Event:
    object_type: str
    object_id: int
    aspect_type: str
    owner_id: int
    updates: Mapping[str, str] | None


class WebhookDisorder:
    """Wraps the hub's `publish`: each event is dropped with `drop`, published twice
    with `duplicate`, or held back with `hold` until the next event is published
    (then both go, the later one first). `flush()` sends what is held."""

    def __init__(
        self,
        strava: StravaSandbox,
        *,
        drop: float,
        duplicate: float,
        hold: float,
        seed: int,
    ) -> None:
        self._hub = strava.webhooks
        self._inner = self._hub.publish
        self._random = random.Random(seed)  # noqa: S311 - a test's dice, not a secret
        self._drop, self._duplicate, self._hold = drop, duplicate, hold
        self._held: list[_Event] = []
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._hub.publish = self._publish  # type: ignore[method-assign]  # this hub only

    def _publish(
        self,
        *,
        object_type: str,
        object_id: int,
        aspect_type: str,
        owner_id: int,
        updates: Mapping[str, str] | None = None,
    ) -> None:
        event = _Event(object_type, object_id, aspect_type, owner_id, updates)
        with self._lock:
            roll = self._random.random()
            held, self._held = self._held, []
            if roll < self._drop:
                fate = "dropped"
            elif roll < self._drop + self._duplicate:
                fate = "duplicated"
            elif roll < self._drop + self._duplicate + self._hold:
                fate = "held"
                self._held.append(event)
            else:
                fate = "delivered"
            self.counts[fate] += 1
            self.counts["reordered"] += len(held)
        if fate in {"delivered", "duplicated"}:
            self._send(event)
        if fate == "duplicated":
            self._send(event)
        for late in held:  # after the event that followed it: out of order
            self._send(late)

    def _send(self, event: _Event) -> None:
        self._inner(
            object_type=event.object_type,
            object_id=event.object_id,
            aspect_type=event.aspect_type,
            owner_id=event.owner_id,
            updates=event.updates,
        )

    def flush(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for late in held:
            self._send(late)


def withhold_activity(garmin: GarminSandbox, activity_id: int) -> bool:
    """Take the activity out of the list answers (its download stays); False when the
    emulator has no such activity."""
    state = garmin._state  # noqa: SLF001 - the same package's emulator
    with state.lock:
        record = state.records.pop(activity_id, None)
        if record is None:
            return False
        _withheld[id(garmin), activity_id] = record
        return True


def release_activity(garmin: GarminSandbox, activity_id: int) -> None:
    """Put a withheld activity back in the list answers."""
    state = garmin._state  # noqa: SLF001 - the same package's emulator
    with state.lock:
        record = _withheld.pop((id(garmin), activity_id), None)
        if record is not None:
            state.records[activity_id] = record


_withheld: dict[tuple[int, int], dict[str, Any]] = {}
