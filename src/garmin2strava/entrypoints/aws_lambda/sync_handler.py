"""Lambda: the scheduled sync (EventBridge, every minute).

One cycle for every account whose lease this invocation gets. It stops before its own
timeout: a timer sets the shared stop event `STOP_MARGIN_MS` before the end, the
cycle finishes the activity in hand and releases its lease, and what is left waits
for the next tick. The lease lasts no longer than the invocation can, so a killed
invocation does not block the account for the default 15 minutes.

An idle invocation is cheap to leave running (issue 20; docs/benchmarks.md): one
BatchGetItem reads the accounts, the app-state items telling reads, and each account's
Garmin tokens and ledger mark (`read_view`); each account's cycle then makes one
conditional write, its first lease (LOOK_LEASE_S), and with nothing to do writes
nothing more: no record, no audit event, no release (the lease runs out, or this warm
container, whose lease owner stays the same, takes it back). Telling reads what the
view read. The tokens decrypt from the KMS cipher's memory (adapters/kms.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from garmin2strava.entrypoints.aws_lambda import _runtime
from garmin2strava.entrypoints.aws_lambda.emf import emit_metrics

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.services.conditions import LedgerGate
    from garmin2strava.services.sync import CycleReport, SyncDeps

__all__ = [
    "STOP_MARGIN_MS",
    "TELL_MIN_MS",
    "Deadline",
    "LambdaContext",
    "changed_nothing",
    "handler",
    "lease_owner",
    "ledger_gate",
    "run_scheduled_sync",
    "runtime",
    "stop_before_timeout",
]

log = logging.getLogger(__name__)

# Time kept for finishing the activity in hand (download, upload, one status poll)
# and releasing the lease; at most half of what is left when the invocation starts.
STOP_MARGIN_MS = 20_000
_MIN_LEASE_S = 60
# The first lease of a cycle: enough to refresh Garmin's tokens and list (each request
# at most 30 s in practice), shorter than the schedule's minute, so an idle cycle's
# unreleased lease has run out when another container's invocation comes. A cycle
# with work renews it to the whole lease first.
LOOK_LEASE_S = 45
# The app-state items an invocation reads once, at its start, for telling.
VIEW_APP_KEYS = ("notify.conditions", "strava_app_access", "strava_outage", "strava_budget")
# What telling and the heartbeat may take after the cycle: the notices' send budget
# and one attempt (services/notify.py), then the ping's timeout. With less left, the
# invocation ends without them rather than be killed in the middle.
TELL_MIN_MS = 25_000


class LambdaContext(Protocol):
    """The part of AWS's context object this module uses."""

    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(slots=True)
class Deadline:
    stopped_early: bool = False  # the stop event fired before the work was done


@contextmanager
def stop_before_timeout(app: App, remaining_ms: int) -> Iterator[Deadline]:
    """The app's stop event set STOP_MARGIN_MS (at most half of what is left) before the
    invocation's end, and cleared after it: a warm container must not carry it into the
    next invocation. The Deadline says whether it fired."""
    margin_ms = min(STOP_MARGIN_MS, remaining_ms // 2)
    deadline = Deadline()
    app.stop.clear()  # a warm container may carry the last invocation's stop
    timer = threading.Timer((remaining_ms - margin_ms) / 1000, app.stop.set)
    timer.daemon = True
    timer.start()
    try:
        yield deadline
    finally:
        timer.cancel()
        deadline.stopped_early = app.stop.is_set()
        app.stop.clear()


@cache
def ledger_gate() -> LedgerGate:
    """Each account's ledger read for dead uploads at most every 15 minutes per warm
    container, not every minute: on DynamoDB it is a Query of the whole ledger."""
    from garmin2strava.services.conditions import LedgerGate

    return LedgerGate(timedelta(minutes=15))


@cache
def lease_owner() -> str:
    """This container's lease owner: the same for each of its (never overlapping)
    invocations, so the next one takes back the lease an idle cycle left."""
    return f"lambda-{uuid.uuid4().hex[:12]}"


@cache
def runtime() -> App:
    """Built by the first invocation of this container, reused by the warm ones."""
    return _runtime.build_app()


def handler(
    event: Mapping[str, Any],  # noqa: ARG001 (the schedule event carries nothing we need)
    context: LambdaContext,
) -> dict[str, Any]:
    return run_scheduled_sync(runtime(), context)


def run_scheduled_sync(app: App, context: LambdaContext) -> dict[str, Any]:
    """Sync every account until done or until the margin before the timeout."""
    from garmin2strava.entrypoints.telling import (
        after_cycle,
        cycle_ok,
        default_sight,
    )
    from garmin2strava.services.notify import KnownAppState
    from garmin2strava.services.status import strava_app_status
    from garmin2strava.services.sync_accounts import sync_all

    started = time.monotonic()
    remaining_ms = context.get_remaining_time_in_millis()
    lease_ttl_s = max(_MIN_LEASE_S, math.ceil(remaining_ms / 1000))

    def deps_for(user_id: str) -> SyncDeps:
        deps = app.sync_deps(user_id)
        deps.config = replace(
            deps.config, lease_ttl_s=lease_ttl_s, look_lease_s=LOOK_LEASE_S, idle_writes=False
        )
        deps.lease_owner = lease_owner()
        return deps

    with stop_before_timeout(app, remaining_ms) as deadline:
        view = app.store.read_view(VIEW_APP_KEYS)
        reports = sync_all(app.store, deps_for, accounts=view.accounts)
    stopped_early = deadline.stopped_early
    unchanged = view if changed_nothing(reports) else None  # else read afresh
    left_ms = context.get_remaining_time_in_millis()
    if left_ms >= TELL_MIN_MS:  # tell, then the heartbeat
        sight = default_sight(app, ledger_gate=ledger_gate())
        after_cycle(app, sight, ok=cycle_ok(reports), view=unchanged)
    else:  # what is owed is told by the next invocation; the heartbeat's grace covers one
        log.warning("lambda.no_time_to_tell", extra={"remainingMs": left_ms})
    outcomes: Counter[str] = Counter()
    for report in reports:
        outcomes.update(report.outcomes)
    summary: dict[str, Any] = {
        "accounts": len(reports),
        "failed": sum(not r.ok for r in reports),
        "skipped": sum(bool(r.skipped_reason) for r in reports),
        "outcomes": dict(sorted(outcomes.items())),
        "stoppedEarly": stopped_early,
        # "inactive": Strava refuses the application (its owner's subscription).
        "stravaApp": strava_app_status(
            app.store if unchanged is None else KnownAppState(app.store, unchanged.app_state),
            now=app.clock(),
        )["state"],
    }
    duration_ms = round((time.monotonic() - started) * 1000, 2)
    log.info(
        "lambda.sync_done",
        extra={"requestId": getattr(context, "aws_request_id", ""), "durationMs": duration_ms}
        | summary,
    )
    dimensions = {"function": "sync"}
    emit_metrics(
        {
            "AccountsSynced": summary["accounts"] - summary["skipped"],
            "CyclesFailed": summary["failed"],
            "StoppedEarly": int(stopped_early),
            "StravaAppInactive": int(summary["stravaApp"] == "inactive"),
        },
        dimensions=dimensions,
    )
    emit_metrics({"SyncDuration": duration_ms}, dimensions=dimensions, unit="Milliseconds")
    for outcome, count in sorted(outcomes.items()):
        emit_metrics({"Uploads": count}, dimensions={**dimensions, "outcome": outcome})
    return summary


def changed_nothing(reports: Sequence[CycleReport]) -> bool:
    """Every cycle idle, or skipped without a lease (paused, backing off): nothing the
    view read was changed by this invocation. A lease held or lost elsewhere means
    another runner is at work: read afresh."""
    from garmin2strava.services.sync import LEASE_HELD, LEASE_LOST

    return all(
        r.ok
        and not r.outcomes
        and not r.error
        and r.deferred_until is None
        and r.skipped_reason not in (LEASE_HELD, LEASE_LOST)
        for r in reports
    )
