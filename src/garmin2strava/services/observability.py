"""What /healthz and /metrics report, gathered from the store, the queue and the
worker; and what the webhook and the worker count and log on the way: the counters
(`MirrorStats`), the log throttle (`LogThrottle`) and an event's log fields."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from garmin2strava.ports import EventQueue, Store
from garmin2strava.services.status import open_conditions_status, strava_app_status

if TYPE_CHECKING:
    from garmin2strava.domain.webhook import WebhookEvent

__all__ = [
    "HealthReport",
    "LogThrottle",
    "MirrorStats",
    "Sample",
    "check_health",
    "collect_metrics",
    "event_log_fields",
    "ms_since",
]

_LOG_EVERY_S = 60.0  # an attacker's flood of one kind costs one log line a minute


class LogThrottle:
    """At most one log line per `every_s` for one kind of event; counts the rest."""

    def __init__(self, every_s: float = _LOG_EVERY_S) -> None:
        self._every_s = every_s
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def due(self, kind: str) -> int | None:
        """None: stay silent. Else log now, with this many lines suppressed before."""
        now = time.monotonic()
        with self._lock:
            if now < self._next.get(kind, -math.inf):
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return None
            self._next[kind] = now + self._every_s
            return self._suppressed.pop(kind, 0)


class MirrorStats:
    """Counters for /metrics and the worker's heartbeat for /healthz. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.worker_last_run: datetime | None = None
        self.worker_last_error: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def beat(self, at: datetime, error: str | None) -> None:
        with self._lock:
            self.worker_last_run = at
            self.worker_last_error = error


def event_log_fields(event: WebhookEvent) -> dict[str, Any]:
    """What the receiver's and the worker's log lines say about an event."""
    fields: dict[str, Any] = {
        "correlationId": event.correlation_id,
        "athleteId": event.owner_id,
        "eventType": f"{event.object_type}.{event.aspect_type}",
    }
    if event.object_type == "activity":
        fields["activityId"] = event.object_id
    return fields


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), for durationMs."""
    return round((time.perf_counter() - started) * 1000, 2)


@dataclass(frozen=True, slots=True)
class HealthReport:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why not ok; empty when ok
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sample:
    """One Prometheus sample: `name{labels} value`, with HELP/TYPE for its family."""

    name: str
    value: float
    help: str
    kind: str = "gauge"  # "gauge" | "counter"
    labels: Mapping[str, str] = field(default_factory=dict)


def check_health(
    store: Store,
    stats: MirrorStats | None,
    *,
    now: datetime,
    max_cycle_age: timedelta,
    max_worker_silence: timedelta = timedelta(seconds=60),
) -> HealthReport:
    """Healthy when the worker ran lately without error, Strava serves the application,
    and every enabled account's last sync cycle succeeded and is recent. An account
    that never ran is not a fault (the daemon just started). `stats` None: no mirror
    worker in this process (`run` on DynamoDB), so none is asked for."""
    reasons: list[str] = []
    detail: dict[str, Any] = {}
    if stats is None:
        detail["mirrorWorker"] = "not in this process"
    else:
        last_run, last_error = stats.worker_last_run, stats.worker_last_error
        detail["workerLastRun"] = last_run.isoformat() if last_run else None
        if last_run is None or now - last_run > max_worker_silence:
            reasons.append("mirror worker not running")
        elif last_error:
            reasons.append(f"mirror worker failing: {last_error}")
    strava_app = strava_app_status(store, now=now)
    detail["stravaApp"] = strava_app
    if strava_app["state"] == "inactive":
        reasons.append(
            f"Strava application inactive since {strava_app['inactiveSince']}: "
            f"{strava_app['cause']}; next probe at {strava_app['nextProbeAt']}"
        )
    # Listed, not judged: a condition is told to the owner (README "Being told"); the
    # health answer stays what restarts and alarms rely on.
    detail["conditions"] = [
        {"key": c["key"], "userId": c["userId"], "since": c["since"]}
        for c in open_conditions_status(store)
    ]
    for account in store.list_accounts():
        if not account.enabled:
            continue
        at = account.last_cycle_at
        detail[f"lastCycle.{account.user_id}"] = at.isoformat() if at else None
        if account.last_cycle_ok is False:
            reasons.append(f"last sync cycle of {account.user_id} failed")
        elif at is not None and now - at > max_cycle_age:
            reasons.append(f"last sync cycle of {account.user_id} is stale")
    return HealthReport(ok=not reasons, reasons=reasons, detail=detail)


def collect_metrics(
    queue: EventQueue | None,
    stats: MirrorStats | None,
    *,
    now: datetime,
    store: Store | None = None,
    budget_used: Callable[[], Mapping[str, int]] | None = None,
) -> list[Sample]:
    """The container's metrics. `budget_used` maps a window name ("15min", "daily",
    "read_15min", ...) to requests spent; the ledger gives uploads by outcome. No
    `queue` and `stats` (`run` on DynamoDB: no webhook in the process): no webhook,
    worker or queue samples rather than zeros that would look like a quiet webhook."""
    samples = [] if queue is None or stats is None else _mirror_samples(queue, stats, now=now)
    samples.extend(_store_samples(store, now=now, budget_used=budget_used))
    return samples


def _mirror_samples(queue: EventQueue, stats: MirrorStats, *, now: datetime) -> list[Sample]:
    counters = stats.snapshot()
    samples = [
        Sample(
            "g2s_webhook_events_received_total",
            counters.get("events_received", 0),
            "Webhook events accepted and queued (first delivery).",
            "counter",
        ),
        Sample(
            "g2s_webhook_events_duplicate_total",
            counters.get("events_duplicate", 0),
            "Redelivered webhook events, not queued again.",
            "counter",
        ),
    ]
    samples.extend(
        Sample(
            "g2s_webhook_events_rejected_total",
            counters.get(f"events_rejected_{reason}", 0),
            "Webhook events not queued (bad: 400; unconfigured: 503, no subscription id "
            "known; foreign: another subscription; unknown_athlete: no account linked to "
            "the athlete; the last two answered as a valid one).",
            "counter",
            {"reason": reason},
        )
        for reason in ("bad", "foreign", "unconfigured", "unknown_athlete")
    )
    samples.append(
        Sample(
            "g2s_webhook_wrong_path_total",
            counters.get("requests_wrong_path", 0),
            "Requests to /webhooks/strava/<secret> with a wrong secret (answered 404).",
            "counter",
        )
    )
    samples.extend(
        Sample(
            "g2s_mirror_events_dropped_total",
            counters.get(f"events_dropped_{reason}", 0),
            "Events settled without effect (unknown athlete, disconnected account).",
            "counter",
            {"reason": reason},
        )
        for reason in ("unknown_athlete", "disconnected")
    )
    samples.extend(
        Sample(
            "g2s_mirror_deauthorizations_total",
            counters.get(key, 0),
            "Deauthorization events: obeyed (Strava refused a refresh), refuted (Strava "
            "granted one: forged), unverifiable (no tokens to ask with).",
            "counter",
            {"verdict": verdict},
        )
        for verdict, key in (
            ("obeyed", "deauthorizations"),
            ("refuted", "deauthorizations_refuted"),
            ("unverifiable", "deauthorizations_unverifiable"),
        )
    )
    for name, text in (
        ("processed", "Events the worker settled."),
        ("failed", "Failed processing attempts."),
        ("dead", "Events moved to the dead-letter store."),
        (
            "deferred",
            "Events put back unsent: Strava budget spent, application inactive or outage.",
        ),
    ):
        samples.append(
            Sample(
                f"g2s_mirror_events_{name}_total",
                counters.get(f"events_{name}", 0),
                text,
                "counter",
            )
        )
    samples.append(
        Sample(
            "g2s_mirror_strava_fetches_total",
            counters.get("strava_fetches", 0),
            "Strava activity fetches made by the worker.",
            "counter",
        )
    )
    samples.append(Sample("g2s_queue_depth", queue.depth(), "Events waiting or in work."))
    oldest = queue.oldest_age(now=now)
    samples.append(
        Sample("g2s_queue_oldest_age_seconds", oldest or 0.0, "Age of the oldest waiting event.")
    )
    return samples


def _store_samples(
    store: Store | None, *, now: datetime, budget_used: Callable[[], Mapping[str, int]] | None
) -> list[Sample]:
    samples: list[Sample] = []
    if budget_used is not None:
        for window, used in sorted(budget_used().items()):
            samples.append(
                Sample(
                    "g2s_strava_budget_used",
                    used,
                    "Strava requests spent in the current window.",
                    labels={"window": window},
                )
            )
    if store is not None:
        strava_app = strava_app_status(store, now=now)
        samples.append(
            Sample(
                "g2s_strava_app_inactive",
                1 if strava_app["state"] == "inactive" else 0,
                "1 while Strava refuses the application (403 Application Status Inactive).",
            )
        )
        samples.append(
            Sample(
                "g2s_strava_app_inactive_probes",
                strava_app["probes"],
                "Requests answered 'inactive' in the current inactive spell (one a window).",
            )
        )
        outcomes: dict[str, int] = {}
        for account in store.list_accounts():
            for entry in store.list_uploads(account.user_id):
                outcomes[entry.outcome.value] = outcomes.get(entry.outcome.value, 0) + 1
        for outcome, count in sorted(outcomes.items()):
            samples.append(
                Sample(
                    "g2s_uploads",
                    count,
                    "Upload ledger entries by outcome (newest 1,000 per account).",
                    labels={"outcome": outcome},
                )
            )
    return samples
