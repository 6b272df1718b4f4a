"""Lambda: the mirror's maintenance (EventBridge, hourly by default).

The daemon's two mirror jobs in one invocation (entrypoints/mirror_jobs.py): a
reconciliation pass for every account that is due (paused ones wait), then the
catch-up of pending streams. A timer sets the stop event `STOP_MARGIN_MS` before the
timeout; the pass then ends before its next Strava request, records nothing (the
account stays due), and the next invocation goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from garmin2strava.entrypoints.aws_lambda import _runtime
from garmin2strava.entrypoints.aws_lambda.emf import emit_metrics
from garmin2strava.entrypoints.aws_lambda.sync_handler import LambdaContext, stop_before_timeout
from garmin2strava.entrypoints.mirror_jobs import catch_up_pending_streams, reconcile_due_accounts

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.services.reconcile import ReconcileReport
    from garmin2strava.services.streams import CatchUpResult

__all__ = ["ENV_DEAD_LETTER_QUEUE_URL", "handler", "run_maintenance", "runtime"]

log = logging.getLogger(__name__)

# terraform/main.tf names the events' dead-letter queue for this function.
ENV_DEAD_LETTER_QUEUE_URL = "G2S_DEAD_LETTER_QUEUE_URL"


@cache
def runtime() -> App:
    """Built by the first invocation of this container, reused by the warm ones."""
    return _runtime.build_app()


def handler(
    event: Mapping[str, Any],  # noqa: ARG001 (the schedule event carries nothing we need)
    context: LambdaContext,
) -> dict[str, Any]:
    return run_maintenance(runtime(), context)


def run_maintenance(app: App, context: LambdaContext) -> dict[str, Any]:
    """Reconcile the due accounts, then catch up pending streams, until done or until
    the margin before the timeout. A step that fails is logged and counted; the other
    still runs, and the next invocation tries again."""
    settings = app.settings
    started = time.monotonic()
    failed: list[str] = []
    reports: list[ReconcileReport] = []
    streams: dict[str, CatchUpResult] | None = None
    paused = sum(not account.enabled for account in app.store.list_accounts())

    with stop_before_timeout(app, context.get_remaining_time_in_millis()) as deadline:
        if settings.mirror_reconcile_hours > 0:
            reports = _step("reconcile", failed, partial(reconcile_due_accounts, app)) or []
        if settings.mirror_streams:
            streams = (
                _step("streams_catch_up", failed, partial(catch_up_pending_streams, app)) or {}
            )
    stopped_early = deadline.stopped_early
    _tell(app)
    summary = _summary(reports, streams, paused=paused, failed=failed, stopped_early=stopped_early)
    duration_ms = round((time.monotonic() - started) * 1000, 2)
    log.info(
        "lambda.maintenance_done",
        extra={"requestId": getattr(context, "aws_request_id", ""), "durationMs": duration_ms}
        | summary,
    )
    dimensions = {"function": "maintenance"}
    emit_metrics(
        {
            "AccountsReconciled": sum(r["complete"] for r in summary["reconciled"]),
            "ActivitiesAdded": sum(len(r.added) for r in reports),
            "ActivitiesDeleted": sum(len(r.deleted) for r in reports),
            "ActivitiesChanged": sum(len(r.changed) for r in reports),
            "StravaReads": summary["reads"],
            "StreamsStored": summary["streams"]["stored"] if summary["streams"] else 0,
            "StreamsLeft": summary["streams"]["left"] if summary["streams"] else 0,
            "StepsFailed": len(failed),
            "StoppedEarly": int(stopped_early),
            "Deferred": int(summary["deferredUntil"] is not None),
        },
        dimensions=dimensions,
    )
    emit_metrics({"MaintenanceDuration": duration_ms}, dimensions=dimensions, unit="Milliseconds")
    return summary


def _tell(app: App) -> None:
    """The conditions this function sees (the dead-letter queue's depth, the webhook
    subscription, the app-wide state), told as the sync tells them; no heartbeat."""
    from garmin2strava.entrypoints.telling import after_cycle
    from garmin2strava.services.conditions import maintenance_sight

    sight = maintenance_sight(
        athlete_capacity=app.settings.strava_athlete_capacity,
        subscription_id_setting=app.settings.strava_subscription_id,
        dead_letter_depth=_dead_letter_depth(),
    )
    after_cycle(app, sight, ok=None)


def _dead_letter_depth() -> Callable[[], int] | None:
    """The SQS dead-letter queue's depth, when terraform named the queue."""
    queue_url = os.environ.get(ENV_DEAD_LETTER_QUEUE_URL, "").strip()
    if not queue_url:
        return None
    from garmin2strava.adapters.queue_sqs import dead_letter_depth

    return partial(dead_letter_depth, queue_url)


def _step[T](name: str, failed: list[str], run: Callable[[], T]) -> T | None:
    """One step; its failure (Strava or the store down, the application inactive) is
    logged and named in the summary (None), and the invocation goes on."""
    try:
        return run()
    except Exception:
        log.exception("maintenance.step_failed", extra={"step": name})
        failed.append(name)
        return None


def _summary(
    reports: list[ReconcileReport],
    streams: Mapping[str, CatchUpResult] | None,
    *,
    paused: int,
    failed: list[str],
    stopped_early: bool,
) -> dict[str, Any]:
    """What the invocation did, JSON-able (the handler's answer and its log line)."""
    deferred = [r.deferred_until for r in reports if r.deferred_until is not None]
    deferred += [s.until for s in (streams or {}).values() if s.until is not None]
    reads = sum(r.reads for r in reports) + sum(s.reads for s in (streams or {}).values())
    return {
        "reconciled": [
            {
                "userId": r.user_id,
                "complete": r.complete,
                "sweep": r.sweep,
                "error": r.error,
                "added": len(r.added),
                "deleted": len(r.deleted),
                "changed": len(r.changed),
                "reads": r.reads,
            }
            for r in reports
        ],
        "streams": None
        if streams is None
        else {
            "accounts": len(streams),
            "stored": sum(s.stored for s in streams.values()),
            "none": sum(s.none for s in streams.values()),
            "left": sum(s.left for s in streams.values()),
            "reads": sum(s.reads for s in streams.values()),
        },
        "reads": reads,
        "paused": paused,
        "deferredUntil": min(deferred).isoformat() if deferred else None,
        "failed": failed,
        "stoppedEarly": stopped_early,
    }
