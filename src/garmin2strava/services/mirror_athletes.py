"""The athletes the webhook receiver takes events for: a cached set, re-read on a miss.

An event of an athlete no account is linked to can do nothing (the worker would drop
it), so the receiver drops it before the queue: a flood of them writes nothing but a
counter. The set is read from the store at start-up and again when an event names an
athlete it does not hold (an account linked since, by `get-token` in another process),
at most once per `ReadGate` interval, so a flood of unknown athletes is at most one
store read a second. Apart from the receiver so that it stays free of store imports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from garmin2strava.services.mirror_subscription import ReadGate

__all__ = ["KnownAthletes"]

# The mirror's log lines keep the logger name they had before the module was split:
# the JSON lines' "logger" field is what operators filter on.
log = logging.getLogger("garmin2strava.services.mirror")


class KnownAthletes:
    """`knows(athlete_id)`: in the cached set, or in the store read now when the gate
    lets it. Until a read succeeds (a broken store) every athlete is let through: the
    worker then decides, as it would without this cache, and no event is lost to it."""

    def __init__(self, read: Callable[[], frozenset[int]], *, gate: ReadGate | None = None) -> None:
        self._read = read
        self._gate = gate or ReadGate()
        self._lock = threading.Lock()
        self._ids: frozenset[int] | None = None

    def load(self) -> frozenset[int] | None:
        """Read the set now; a failed read keeps the last one (logged)."""
        try:
            ids = self._read()
        except Exception as exc:  # noqa: BLE001 (a broken store must not break the webhook)
            log.warning("webhook.athletes_unreadable", extra={"error": type(exc).__name__})
            with self._lock:
                return self._ids
        with self._lock:
            self._ids = ids
        return ids

    def knows(self, athlete_id: int) -> bool:
        ids = self._ids
        if ids is not None and athlete_id in ids:
            return True
        if not self._gate.open():
            return ids is None
        ids = self.load()
        return ids is None or athlete_id in ids
