"""Our webhook subscription id: where it is kept, and the cache the receiver checks.

`webhook subscribe` and `webhook list` store the id in the app state
(`remember_subscription`); `status` and the receiver read it back
(`subscription_from_state`). The receiver asks a `SubscriptionSource`, which re-reads
the stored id in the background; only an event naming another id makes it read the
store at once (`reread`, at most once per `ReadGate` interval), so the first event
after a `webhook subscribe` is not refused for a stale cache. Apart from the receiver
so that `status` and the CLI read the id without importing the webhook path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from garmin2strava.ports import AppState

__all__ = [
    "MISS_READ_INTERVAL_S",
    "SUBSCRIPTION_STATE_KEY",
    "ReadGate",
    "SubscriptionSource",
    "remember_subscription",
    "subscription_from_state",
]

# The mirror's log lines keep the logger name they had before the module was split:
# the JSON lines' "logger" field is what operators filter on.
log = logging.getLogger("garmin2strava.services.mirror")

# App state written by `webhook subscribe` / `webhook list`: {"subscriptionId": int}.
SUBSCRIPTION_STATE_KEY = "webhook_subscription"


# The receiver's store reads on a cache miss: at most one per this many seconds per
# source and process, so a flood of forged ids is at most one read a second.
MISS_READ_INTERVAL_S = 1.0


class ReadGate:
    """Lets one caller through per `every_s`; the rest are told no at once. Thread-safe."""

    def __init__(
        self,
        every_s: float = MISS_READ_INTERVAL_S,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._every_s = every_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next = -math.inf

    def open(self) -> bool:
        now = self._monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self._every_s
            return True


def subscription_from_state(value: Mapping[str, Any] | None) -> int | None:
    """The subscription id in the app state `webhook subscribe` wrote, or None."""
    found = (value or {}).get("subscriptionId")
    if isinstance(found, int) and not isinstance(found, bool) and found > 0:
        return found
    return None


def remember_subscription(store: AppState, subscription_id: int | None, *, now: datetime) -> None:
    """Store the application's subscription id (None: there is none)."""
    store.put_app_state(
        SUBSCRIPTION_STATE_KEY, {"subscriptionId": subscription_id, "recordedAt": now.isoformat()}
    )


class SubscriptionSource:
    """Our subscription id as the receiver checks it: the setting when given
    (STRAVA_SUBSCRIPTION_ID), else what `read` returns (the id `webhook subscribe` and
    `webhook list` stored). `load` reads synchronously (at start-up); afterwards
    `current` never waits: a stale value starts a background re-read, every
    `refresh_s` while an id is known and every `retry_s` while none is. `reread` reads
    now when `gate` lets it: for an event that names an id the cache does not hold."""

    def __init__(
        self,
        *,
        fixed: int | None = None,
        read: Callable[[], int | None] | None = None,
        refresh_s: float = 60.0,
        retry_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        gate: ReadGate | None = None,
    ) -> None:
        self._fixed = fixed
        self._read = read
        self._refresh_s = refresh_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: int | None = None
        self._loaded_at = -math.inf
        self._refreshing = False
        self._gate = gate or ReadGate(monotonic=monotonic)

    @property
    def source(self) -> str | None:
        """ "setting", "store", or None when no id is known."""
        if self._fixed is not None:
            return "setting"
        return "store" if self._value is not None else None

    def load(self) -> int | None:
        """Read the stored id now; a failed read keeps the last value (logged)."""
        if self._fixed is not None or self._read is None:
            return self._fixed
        try:
            value = self._read()
        except Exception as exc:  # noqa: BLE001 (a broken store must not break the webhook)
            log.warning("webhook.subscription_unreadable", extra={"error": type(exc).__name__})
            value = self._value
        with self._lock:
            self._value = value
            self._loaded_at = self._monotonic()
            self._refreshing = False
        return value

    def current(self) -> int | None:
        if self._fixed is not None or self._read is None:
            return self._fixed
        with self._lock:
            due = self._refresh_s if self._value is not None else self._retry_s
            start = not self._refreshing and self._monotonic() - self._loaded_at >= due
            if start:
                self._refreshing = True
            value = self._value
        if start:
            threading.Thread(target=self.load, name="webhook-subscription", daemon=True).start()
        return value

    def reread(self) -> int | None:
        """The stored id read now (a subscription made or replaced since the last read
        counts at once), or the cached one when the gate is shut or the id is a setting."""
        if self._fixed is not None or self._read is None:
            return self._fixed
        if not self._gate.open():
            with self._lock:
                return self._value
        return self.load()
